//! `cellar completions SHELL` and `cellar man`: generated from the clap
//! definition, so they never drift from the real options.

use clap::CommandFactory;

use crate::cli::Cli;
use crate::Failure;

pub fn completions(shell: clap_complete::Shell) -> Result<i32, Failure> {
    let mut cmd = Cli::command();
    clap_complete::generate(shell, &mut cmd, "cellar", &mut std::io::stdout());
    Ok(0)
}

pub fn man() -> Result<i32, Failure> {
    clap_mangen::Man::new(Cli::command()).render(&mut std::io::stdout())?;
    Ok(0)
}
