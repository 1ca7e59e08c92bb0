//! The `redstream` binary. Everything lives in the library half of this crate
//! (`redstream_cli`), so that integration tests can drive the same code in-process.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = redstream_cli::Cli::parse();
    redstream_cli::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::from(redstream_cli::EXIT_FAILURE);
        }
    };
    runtime.block_on(redstream_cli::run(cli))
}
