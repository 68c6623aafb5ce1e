/* The floor for `start all`: a C loop that starts N programs the way minderd starts its
 * children, and nothing else (issue 17: "the limit, measured in the same run").
 *
 *   spawn COUNT THREADS PROGRAM [ARG...]
 *
 * Starts COUNT copies of PROGRAM (an absolute path: minderd resolves PATH before it forks,
 * too) with posix_spawn, from THREADS threads (each starts its share, COUNT/THREADS), then
 * prints one line to stdout:
 *
 *     <count> <threads> <seconds from the first spawn to the last one's return>
 *
 * Each child gets what minderd gives one: three close-on-exec pipes for stdin, stdout and
 * stderr (the parent keeps the write end of stdin and the read ends of stdout and stderr open,
 * as minderd does, so the descriptor table grows the same way), its own process group
 * (setpgid(0, 0)), an empty signal mask and default dispositions. glibc's posix_spawn uses
 * clone(CLONE_VM | CLONE_VFORK), so it returns once the child has exec'ed (or failed to):
 * minderd's spawn also waits for exec, through its close-on-exec error pipe, before it calls
 * the process RUNNING (startsecs = 0). minderd does more per child that is not counted here
 * (its error pipe, the log pipes' readers, the state machine, the event): the difference
 * between the two is exactly what minderd adds.
 *
 * With SPAWN_CAPTURE=0 in the environment, stdout and stderr go to /dev/null and only the
 * stdin pipe is made, as minderd does for a program whose output is not captured
 * (stdout_logfile=NONE, redirect_stderr=true): 1 descriptor per child stays open here.
 *
 * After the timing, every child is sent SIGKILL (by its pid, which is also its process
 * group) and reaped; that part is not timed.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

struct job {
    int first, count;      /* the slice of pids[] this thread fills */
    char **argv;
    pid_t *pids;
    int *fds;              /* 3 per child: parent ends of stdin, stdout, stderr */
    int failed;            /* errno of the first failure, 0 if none */
};

static int capture = 1;  /* SPAWN_CAPTURE=0: stdout and stderr on /dev/null */
static int devnull = -1;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static void *run(void *arg) {
    struct job *j = arg;
    posix_spawnattr_t attr;
    sigset_t none, all;
    sigemptyset(&none);
    sigfillset(&all);
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
    posix_spawnattr_setpgroup(&attr, 0);
    posix_spawnattr_setsigmask(&attr, &none);
    posix_spawnattr_setsigdefault(&attr, &all);
    for (int i = j->first; i < j->first + j->count; i++) {
        int in[2], out[2] = {-1, devnull}, err[2] = {-1, devnull};
        if (pipe2(in, O_CLOEXEC) || (capture && (pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC)))) {
            j->failed = errno;
            break;
        }
        /* dup2 clears close-on-exec on the copy: the child keeps 0, 1 and 2 only. */
        posix_spawn_file_actions_t fa;
        posix_spawn_file_actions_init(&fa);
        posix_spawn_file_actions_adddup2(&fa, in[0], 0);
        posix_spawn_file_actions_adddup2(&fa, out[1], 1);
        posix_spawn_file_actions_adddup2(&fa, err[1], 2);
        int rc = posix_spawn(&j->pids[i], j->argv[0], &fa, &attr, j->argv, environ);
        posix_spawn_file_actions_destroy(&fa);
        close(in[0]);
        if (capture) {
            close(out[1]);
            close(err[1]);
        }
        j->fds[3 * i] = in[1];
        j->fds[3 * i + 1] = out[0];
        j->fds[3 * i + 2] = err[0];
        if (rc != 0) {
            j->pids[i] = 0;
            j->failed = rc;
            break;
        }
    }
    posix_spawnattr_destroy(&attr);
    return NULL;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: spawn COUNT THREADS PROGRAM [ARG...]\n");
        return 2;
    }
    int count = atoi(argv[1]), threads = atoi(argv[2]);
    if (count < 1 || threads < 1 || threads > 64 || argv[3][0] != '/') {
        fprintf(stderr, "spawn: COUNT >= 1, 1 <= THREADS <= 64, PROGRAM an absolute path\n");
        return 2;
    }
    const char *cap = getenv("SPAWN_CAPTURE");
    capture = !(cap && strcmp(cap, "0") == 0);
    devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    if (devnull < 0) {
        perror("spawn: /dev/null");
        return 1;
    }
    /* 3 descriptors per child stay open here, as in minderd. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    pid_t *pids = calloc((size_t)count, sizeof *pids);
    int *fds = malloc((size_t)count * 3 * sizeof *fds);
    struct job *jobs = calloc((size_t)threads, sizeof *jobs);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    if (!pids || !fds || !jobs || !tids) {
        perror("spawn: calloc");
        return 1;
    }
    for (int i = 0; i < count * 3; i++) fds[i] = -1;
    int per = count / threads, extra = count % threads, first = 0;
    for (int t = 0; t < threads; t++) {
        jobs[t] = (struct job){first, per + (t < extra), argv + 3, pids, fds, 0};
        first += jobs[t].count;
    }
    double t0 = now_s();
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tids[t], NULL, run, &jobs[t]) != 0) {
            perror("spawn: pthread_create");
            return 1;
        }
    }
    run(&jobs[0]); /* the main thread is the first spawner */
    for (int t = 1; t < threads; t++) pthread_join(tids[t], NULL);
    double took = now_s() - t0;

    int failed = 0, spawned = 0;
    for (int t = 0; t < threads; t++)
        if (jobs[t].failed) failed = jobs[t].failed;
    for (int i = 0; i < count; i++) {
        if (pids[i] > 0) {
            spawned++;
            kill(pids[i], SIGKILL);
        }
    }
    for (int i = 0; i < count; i++)
        if (pids[i] > 0) waitpid(pids[i], NULL, 0);
    if (failed) {
        fprintf(stderr, "spawn: %d of %d started: %s\n", spawned, count, strerror(failed));
        return 1;
    }
    printf("%d %d %.6f\n", count, threads, took);
    return 0;
}
