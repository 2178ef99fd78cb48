//! The `Sandbox` port: a stub that answers by input (`echo_sandbox`), and the contract every
//! sandbox keeps (the stub here, `WorkerdSandbox` in `tests/sandbox.rs`).

use crate::domain::dal::{MockSandbox, RunResult, Sandbox, Slot};

/// A sandbox that runs `OK_JOB` as workerd would ("ok"), and any other code by input: `loop`
/// times out, `big` is too large, `bad` does not load, `oom` crashes, else echoes.
pub fn echo_sandbox() -> MockSandbox {
    let mut sandbox = MockSandbox::new();
    sandbox
        .expect_run()
        .returning(|_, code, input, _deadline| match input {
            _ if code == OK_JOB => Ok(RunResult::Output(b"ok".to_vec())),
            b"loop" => Ok(RunResult::DeadlineExceeded),
            b"big" => Ok(RunResult::OutputTooLarge),
            b"bad" => Ok(RunResult::LoadFailed("SyntaxError".into())),
            b"oom" => Ok(RunResult::Crashed("killed".into())),
            other => Ok(RunResult::Output(other.to_vec())),
        });
    sandbox.expect_runtime_found().return_const(true);
    sandbox
}

/// Answers with the request body, unchanged.
pub const ECHO_JOB: &str =
    "export default { async fetch(request) { return new Response(await request.arrayBuffer()); } };";

/// Answers "ok" whatever the input.
pub const OK_JOB: &str = "export default { fetch() { return new Response(\"ok\"); } };";

/// The sandbox runs code on input inside `slot`: an echo job returns its input byte for byte
/// (binary, UTF-8, empty), a trivial job returns its output.
pub async fn sandbox_contract(s: &dyn Sandbox, slot: &Slot) {
    assert!(s.runtime_found(), "a working sandbox finds its runtime");
    let utf8 = "contract: héllo — 日本語 🎉".as_bytes().to_vec();
    let binary: Vec<u8> = vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    for input in [utf8, binary, Vec::new()] {
        let result = s.run(slot, ECHO_JOB, &input, 30_000).await;
        assert_eq!(
            result,
            Ok(RunResult::Output(input.clone())),
            "echo of {input:?}"
        );
    }
    let result = s.run(slot, OK_JOB, b"{\"num\":1}", 30_000).await;
    assert_eq!(result, Ok(RunResult::Output(b"ok".to_vec())));
}
