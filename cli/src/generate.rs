//! What packagers install: shell completion scripts and man pages, both generated from the
//! clap definitions so they never disagree with `--help`.

use std::path::Path;

use clap::CommandFactory;

use crate::{exit, Cli};

/// `minder completions SHELL`: prints the completion script.
pub fn completions(shell: clap_complete::Shell) -> u8 {
    // Generated into memory first: clap_complete panics when its writer fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "minder", &mut script);
    out!("{}", String::from_utf8_lossy(&script));
    exit::OK
}

/// `minder man DIR`: writes minder.1 and a page per command (minder-status.1, …), and says
/// which files it wrote.
pub fn man_pages(dir: &Path) -> u8 {
    match write_man_pages(dir) {
        Ok(written) => {
            for path in written {
                outln!("{}", path.display());
            }
            exit::OK
        }
        Err(e) => {
            eprintln!("minder: cannot write man pages in {}: {e}", dir.display());
            exit::GENERIC
        }
    }
}

fn write_man_pages(dir: &Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    std::fs::create_dir_all(dir)?;
    // As clap_mangen::generate_to, which does not say what it wrote: no page for `help`,
    // none for hidden commands, and names like `minder-config-convert` once built.
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    let mut todo = vec![cmd];
    while let Some(cmd) = todo.pop() {
        todo.extend(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
        written.push(clap_mangen::Man::new(cmd).generate_to(dir)?);
    }
    written.sort();
    Ok(written)
}
