//! The `redstream` binary. Everything lives in the library half of this crate
//! (`redstream_cli`), so that integration tests can drive the same code in-process.

use std::io::Write as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = redstream_cli::Cli::parse_with_sources();
    redstream_cli::init_tracing(&cli.global);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            let _ = writeln!(
                std::io::stderr(),
                "error: cannot start the async runtime: {error}"
            );
            return ExitCode::from(redstream_cli::EXIT_FAILURE);
        }
    };
    let code = runtime.block_on(redstream_cli::run(cli));
    // Dropping the runtime would wait for its blocking threads, and one may be parked in a
    // read of stdin that never returns (`redstream sink --input -` stopped by a signal while
    // its input is still open). Everything worth finishing has finished by now.
    runtime.shutdown_background();
    code
}
