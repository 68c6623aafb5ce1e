/* The benchmark's child programs, at C speed (Python is too slow a producer to measure a
 * supervisor's log capture with).
 *
 *   kid lines BYTES STAMPFILE
 *       Writes BYTES bytes to stdout as 64-byte lines, each numbered
 *       ("0000000000000042 ........\n"), in 64 KiB writes. Then writes to STAMPFILE:
 *       "<start_ns> <end_ns> <cpu_ns>\n": CLOCK_REALTIME when it began and when its last
 *       write returned, and its own user+system CPU time. A writer is held back by a full
 *       pipe, so its duration is the time the reader took to take the bytes (to within one
 *       pipe buffer, 64 KiB).
 *
 *   kid tick COUNT INTERVAL_MS
 *       Writes COUNT lines "<seq> <realtime_ns>\n" to stdout, one every INTERVAL_MS, each
 *       with one write(2) made right after reading the clock.
 *
 *   kid crash MS STAMPFILE
 *       Appends "s <realtime_ns>\n" to STAMPFILE as it starts, sleeps MS ms, appends
 *       "e <realtime_ns>\n" and exits 1: a program that crashes, for the crash-to-respawn gap
 *       measured the same way under every supervisor (next "s" minus the previous "e").
 *
 * The output of `kid lines` is a pure function of BYTES, so two captures of it compare byte
 * for byte.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LINE 64
#define BUF (64 * 1024)

static long long now_ns(clockid_t clock) {
    struct timespec ts;
    clock_gettime(clock, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static int write_all(int fd, const char *p, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Writes the 16-digit decimal `n` at `p`. */
static void put_number(char *p, unsigned long long n) {
    for (int i = 15; i >= 0; i--) {
        p[i] = (char)('0' + n % 10);
        n /= 10;
    }
}

static int lines(unsigned long long total, const char *stampfile) {
    static char buf[BUF];
    /* A fixed body after the number: printable, and different from line to line only in
     * the number. */
    for (int i = 0; i < BUF; i += LINE) {
        memset(buf + i, 'x', LINE);
        buf[i + 16] = ' ';
        for (int j = 17; j < LINE - 1; j++) buf[i + j] = (char)('a' + (j % 26));
        buf[i + LINE - 1] = '\n';
    }
    long long start = now_ns(CLOCK_REALTIME);
    unsigned long long line = 0, written = 0;
    while (written < total) {
        size_t n = total - written < BUF ? (size_t)(total - written) : BUF;
        for (size_t off = 0; off < n; off += LINE) put_number(buf + off, line++);
        if (write_all(1, buf, n) != 0) {
            perror("kid: write");
            return 1;
        }
        written += n;
    }
    long long end = now_ns(CLOCK_REALTIME);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    long long cpu = (ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000LL +
                    (ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000LL;
    FILE *f = fopen(stampfile, "w");
    if (!f) {
        perror("kid: stampfile");
        return 1;
    }
    fprintf(f, "%lld %lld %lld\n", start, end, cpu);
    fclose(f);
    return 0;
}

static int tick(long count, long interval_ms) {
    struct timespec next;
    clock_gettime(CLOCK_MONOTONIC, &next);
    for (long seq = 0; seq < count; seq++) {
        next.tv_nsec += interval_ms * 1000000L;
        while (next.tv_nsec >= 1000000000L) {
            next.tv_nsec -= 1000000000L;
            next.tv_sec++;
        }
        while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL) == EINTR) {
        }
        char line[64];
        int n = snprintf(line, sizeof line, "%ld %lld\n", seq, now_ns(CLOCK_REALTIME));
        if (write_all(1, line, (size_t)n) != 0) return 1;
    }
    return 0;
}

/* One O_APPEND write of "<tag> <realtime_ns>\n": whole lines, even if two runs overlap. */
static int stamp(int fd, char tag) {
    char line[64];
    int n = snprintf(line, sizeof line, "%c %lld\n", tag, now_ns(CLOCK_REALTIME));
    return write_all(fd, line, (size_t)n);
}

static int crash(long ms, const char *stampfile) {
    int fd = open(stampfile, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0 || stamp(fd, 's') != 0) {
        perror("kid: stampfile");
        return 2;
    }
    struct timespec d = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&d, &d) == EINTR) {
    }
    if (stamp(fd, 'e') != 0) return 2;
    return 1;
}

int main(int argc, char **argv) {
    if (argc == 4 && strcmp(argv[1], "lines") == 0) return lines(strtoull(argv[2], NULL, 10), argv[3]);
    if (argc == 4 && strcmp(argv[1], "tick") == 0) return tick(atol(argv[2]), atol(argv[3]));
    if (argc == 4 && strcmp(argv[1], "crash") == 0) return crash(atol(argv[2]), argv[3]);
    fprintf(stderr, "usage: kid lines BYTES STAMPFILE | kid tick COUNT INTERVAL_MS | kid crash MS STAMPFILE\n");
    return 2;
}
