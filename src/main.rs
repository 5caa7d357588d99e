//! cellar: declarative, streaming, encrypted backups of PostgreSQL
//! databases and folders. `main` parses the command line, sets up logging
//! and maps the outcome to an exit code: 0 success, 1 a job failed, 2 bad
//! usage or invalid configuration.

use cellar::{cancel, cli, commands, logging, progress};
use clap::Parser;

fn main() {
    let cli = cli::Cli::parse();
    logging::init(cli.verbose, cli.quiet, cli.log_format);
    cancel::install();
    if cli.command.only_prints() {
        cancel::end_on_closed_stdout();
    }
    let code = match commands::dispatch(&cli) {
        Ok(code) => code,
        Err(f) => {
            match cli.log_format {
                cli::LogFormat::Json => tracing::error!("{:#}", f.error),
                cli::LogFormat::Text => {
                    let text = format!("error: {:#}", f.error);
                    progress::suspend(|| eprintln!("{}", logging::log_text(&text)));
                }
            }
            f.code
        }
    };
    cellar::source::postgres::close_sessions();
    std::process::exit(code);
}
