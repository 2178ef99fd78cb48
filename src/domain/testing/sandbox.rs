//! The `Sandbox` port: a stub that answers by input (`echo_sandbox`), and the contract every
//! sandbox keeps (the stub here, `WorkerdSandbox` in `tests/sandbox.rs`).

use crate::domain::dal::{MockSandbox, RunResult, Sandbox, Slot};

/// A sandbox that runs `OK_JOB` and `SECRET_JOB` as workerd would, and any other code by
/// input: `secret` answers as `SECRET_JOB` (so domain tests see which secret was passed),
/// `loop` times out, `big` is too large, `bad` does not load, `oom` crashes, else echoes.
pub fn echo_sandbox() -> MockSandbox {
    let mut sandbox = MockSandbox::new();
    sandbox
        .expect_run()
        .returning(|_, code, input, secret, _deadline| match input {
            _ if code == OK_JOB => Ok(RunResult::Output(b"ok".to_vec())),
            _ if code == SECRET_JOB || input == b"secret" => Ok(RunResult::Output(
                secret.map_or(NO_SECRET.to_vec(), <[u8]>::to_vec),
            )),
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

/// Answers its `env.secret` byte for byte when `env` is exactly `{ secret: <ArrayBuffer> }`,
/// [`NO_SECRET`] when `env` is empty, and what it saw otherwise.
pub const SECRET_JOB: &str = r#"export default {
  fetch(request, env) {
    const keys = Object.keys(env);
    const kind = Object.prototype.toString.call(env.secret);
    if (keys.length === 0) return new Response("no secret");
    if (keys.length === 1 && keys[0] === "secret" && kind === "[object ArrayBuffer]") {
      return new Response(env.secret);
    }
    return new Response("unexpected env: " + JSON.stringify(keys) + " " + kind);
  },
};"#;

/// What `SECRET_JOB` answers to a job without a secret.
pub const NO_SECRET: &[u8] = b"no secret";

/// The sandbox runs code on input inside `slot`: an echo job returns its input byte for byte
/// (binary, UTF-8, empty), a trivial job returns its output; a job's secret reaches that job
/// alone as `env.secret` (every byte value intact), and a job without one has an empty `env`,
/// even right after a job with one in the same slot.
pub async fn sandbox_contract(s: &dyn Sandbox, slot: &Slot) {
    assert!(s.runtime_found(), "a working sandbox finds its runtime");
    let utf8 = "contract: héllo — 日本語 🎉".as_bytes().to_vec();
    let binary: Vec<u8> = vec![0, 1, 2, 0x7f, 0x80, 0xfe, 0xff];
    for input in [utf8, binary, Vec::new()] {
        let result = s.run(slot, ECHO_JOB, &input, None, 30_000).await;
        assert_eq!(
            result,
            Ok(RunResult::Output(input.clone())),
            "echo of {input:?}"
        );
    }
    let result = s.run(slot, OK_JOB, b"{\"num\":1}", None, 30_000).await;
    assert_eq!(result, Ok(RunResult::Output(b"ok".to_vec())));

    let secret: Vec<u8> = (0..=255u8).collect();
    let with = s.run(slot, SECRET_JOB, b"", Some(&secret), 30_000).await;
    assert_eq!(with, Ok(RunResult::Output(secret)), "the job's secret");
    let without = s.run(slot, SECRET_JOB, b"", None, 30_000).await;
    assert_eq!(
        without,
        Ok(RunResult::Output(NO_SECRET.to_vec())),
        "no secret, right after a job with one"
    );
}
