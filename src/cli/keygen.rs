//! The `keygen` command: write a new enclave key file (mode 0600) and print its address.

use std::path::Path;
use std::process::ExitCode;

use serverless_executor::domain::dal::EnclaveSigner;
use serverless_executor::effects::signer::EnclaveKey;

pub fn run(out: &Path) -> ExitCode {
    match EnclaveKey::generate(out) {
        Ok(key) => {
            println!("{:?}", key.address());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
