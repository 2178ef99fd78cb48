//! The owner's side of registration: the executor's signed registration message, an attestation
//! of its enclave and the attestation verifier's signature become one `registerExecutor` call,
//! after the stake is approved. The `client register` command and the devnet both use it.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use ethers::signers::Signer;
use ethers::types::{Address, H256, U256};
use serde_json::{json, Value};

use super::jobs::{register_executor, AttestationProof, ExecutorRegistration};
use super::{client, wallet};
use crate::effects::chain::bindings::ExecutorsTokens;

/// What the owner brings to `registerExecutor`.
#[derive(Debug, Clone)]
pub struct RegisterRequest {
    /// The executor's `GET /signed-registration-message` answer: a file or its http(s) URL.
    pub registration: String,
    /// The enclave's attestation (JSON, see `parse_attestation`): a file or an http(s) URL.
    pub attestation: String,
    /// The attestation verifier's signature over the attestation.
    pub attestation_signature: Vec<u8>,
    /// POND base units to stake; None: the contract's `MIN_STAKE_AMOUNT`.
    pub stake: Option<U256>,
}

/// The bytes at `source`: fetched when it is an http(s) URL, read from a file otherwise.
pub async fn read_source(source: &str) -> Result<Vec<u8>> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let response = reqwest::get(source)
            .await
            .with_context(|| format!("cannot fetch {source}"))?;
        let status = response.status();
        let body = response.bytes().await?;
        if !status.is_success() {
            bail!(
                "{source} answered {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(body.to_vec())
    } else {
        std::fs::read(Path::new(source)).with_context(|| format!("cannot read {source}"))
    }
}

fn hex_field(body: &Value, names: &[&str]) -> Result<Vec<u8>> {
    let text = names
        .iter()
        .find_map(|name| body[name].as_str())
        .ok_or_else(|| anyhow!("the JSON lacks {} (a hex string)", names.join(" or ")))?;
    hex::decode(text.trim_start_matches("0x"))
        .map_err(|_| anyhow!("{} is not hex: {text}", names[0]))
}

fn number_field(body: &Value, names: &[&str]) -> Result<u64> {
    names
        .iter()
        .find_map(|name| body[name].as_u64())
        .ok_or_else(|| anyhow!("the JSON lacks {} (a number)", names.join(" or ")))
}

/// The signed registration message (the executor's `GET /signed-registration-message` JSON);
/// returns it with the owner it was signed for. The stake is left at zero.
pub fn parse_registration(bytes: &[u8]) -> Result<(ExecutorRegistration, Address)> {
    let body: Value = serde_json::from_slice(bytes)
        .context("the registration message is not JSON from GET /signed-registration-message")?;
    let signature = hex_field(&body, &["signature"])?;
    if signature.len() != 65 {
        bail!(
            "the registration signature has {} bytes, not 65",
            signature.len()
        );
    }
    let owner: Address = body["owner"]
        .as_str()
        .ok_or_else(|| anyhow!("the registration message lacks owner"))?
        .parse()
        .map_err(|_| anyhow!("the registration message's owner is not an address"))?;
    let env = number_field(&body, &["env"])?;
    let registration = ExecutorRegistration {
        job_capacity: number_field(&body, &["job_capacity"])?,
        sign_timestamp: number_field(&body, &["sign_timestamp"])?,
        signature,
        env: u8::try_from(env).map_err(|_| anyhow!("env {env} is not a uint8"))?,
        stake_amount: U256::zero(),
    };
    Ok((registration, owner))
}

/// An attestation: either a Nitro attestation document as the enclave's attestation endpoint
/// serves it (COSE_Sign1 CBOR, raw or as hex text; its `public_key` is the enclave key), or JSON
/// with `enclave_public_key` (or `secp256k1_public`; 64 bytes, hex), `pcr0`, `pcr1`, `pcr2`
/// (48 bytes each, hex) and `timestamp_ms` (or `timestamp`, unix ms). The verifier's signature
/// is given separately (the document's own signature is the verifier's business).
pub fn parse_attestation(bytes: &[u8]) -> Result<AttestationProof> {
    let text = String::from_utf8_lossy(bytes);
    let proof = if text.trim_start().starts_with('{') {
        parse_attestation_json(bytes)?
    } else {
        let hex_text = text.trim().trim_start_matches("0x");
        let document = match hex::decode(hex_text) {
            Ok(decoded) if !hex_text.is_empty() => decoded,
            _ => bytes.to_vec(),
        };
        parse_nitro_document(&document)?
    };
    check_attestation(proof)
}

fn parse_attestation_json(bytes: &[u8]) -> Result<AttestationProof> {
    let body: Value = serde_json::from_slice(bytes).context(
        "the attestation is not JSON with enclave_public_key, pcr0, pcr1, pcr2 and timestamp_ms",
    )?;
    let mut enclave_public_key = hex_field(&body, &["enclave_public_key", "secp256k1_public"])?;
    // An uncompressed key with its 04 prefix is accepted too; the contract takes 64 bytes.
    if enclave_public_key.len() == 65 && enclave_public_key[0] == 4 {
        enclave_public_key.remove(0);
    }
    let proof = AttestationProof {
        enclave_public_key,
        pcr0: hex_field(&body, &["pcr0"])?,
        pcr1: hex_field(&body, &["pcr1"])?,
        pcr2: hex_field(&body, &["pcr2"])?,
        timestamp_ms: number_field(&body, &["timestamp_ms", "timestamp"])?,
        signature: vec![],
    };
    Ok(proof)
}

/// The fields `registerExecutor` needs from a Nitro attestation document: COSE_Sign1 (an array,
/// possibly tagged 18) whose payload is a CBOR map with `pcrs` (index → bytes), `timestamp`
/// (unix ms) and `public_key`.
fn parse_nitro_document(document: &[u8]) -> Result<AttestationProof> {
    use ciborium::Value as Cbor;
    let not_a_document = "the attestation is neither JSON nor a Nitro attestation document (CBOR)";
    let cose: Cbor = ciborium::from_reader(document).context(not_a_document)?;
    let cose = match cose {
        Cbor::Tag(_, inner) => *inner,
        other => other,
    };
    let payload = match cose {
        Cbor::Array(items) if items.len() == 4 => match &items[2] {
            Cbor::Bytes(payload) => payload.clone(),
            _ => bail!("{not_a_document}: its payload is not a byte string"),
        },
        _ => bail!("{not_a_document}: not a COSE_Sign1 array of four"),
    };
    let Cbor::Map(fields) = ciborium::from_reader::<Cbor, _>(payload.as_slice())
        .context("the attestation document's payload is not CBOR")?
    else {
        bail!("the attestation document's payload is not a map");
    };
    let field = |name: &str| {
        fields
            .iter()
            .find(|(k, _)| matches!(k, Cbor::Text(t) if t == name))
            .map(|(_, v)| v.clone())
    };
    let timestamp_ms = match field("timestamp") {
        Some(Cbor::Integer(n)) => u64::try_from(n)
            .map_err(|_| anyhow!("the attestation's timestamp is not a unix time in ms"))?,
        _ => bail!("the attestation document has no timestamp"),
    };
    let Some(Cbor::Map(pcrs)) = field("pcrs") else {
        bail!("the attestation document has no pcrs");
    };
    let pcr = |index: u8| -> Result<Vec<u8>> {
        pcrs.iter()
            .find_map(|(k, v)| match (k, v) {
                (Cbor::Integer(i), Cbor::Bytes(b)) if u8::try_from(*i).ok() == Some(index) => {
                    Some(b.clone())
                }
                _ => None,
            })
            .ok_or_else(|| anyhow!("the attestation document has no PCR{index}"))
    };
    let mut enclave_public_key = match field("public_key") {
        Some(Cbor::Bytes(key)) => key,
        _ => bail!("the attestation document carries no public_key (the enclave key)"),
    };
    if enclave_public_key.len() == 65 && enclave_public_key[0] == 4 {
        enclave_public_key.remove(0);
    }
    Ok(AttestationProof {
        enclave_public_key,
        pcr0: pcr(0)?,
        pcr1: pcr(1)?,
        pcr2: pcr(2)?,
        timestamp_ms,
        signature: vec![],
    })
}

fn check_attestation(proof: AttestationProof) -> Result<AttestationProof> {
    // Said here, more plainly than the chain's AttestationAuther errors would.
    if proof.enclave_public_key.len() != 64 {
        bail!(
            "the enclave public key has {} bytes, not 64",
            proof.enclave_public_key.len()
        );
    }
    for (name, pcr) in [
        ("pcr0", &proof.pcr0),
        ("pcr1", &proof.pcr1),
        ("pcr2", &proof.pcr2),
    ] {
        if pcr.len() != 48 {
            bail!("{name} has {} bytes, not 48", pcr.len());
        }
    }
    Ok(proof)
}

/// A dev attestation of `enclave_public_key` (the dev image, taken now), as JSON.
pub fn dev_attestation_json(enclave_public_key: [u8; 64]) -> Value {
    let proof = AttestationProof::dev(enclave_public_key);
    json!({
        "enclave_public_key": format!("0x{}", hex::encode(&proof.enclave_public_key)),
        "pcr0": format!("0x{}", hex::encode(&proof.pcr0)),
        "pcr1": format!("0x{}", hex::encode(&proof.pcr1)),
        "pcr2": format!("0x{}", hex::encode(&proof.pcr2)),
        "timestamp_ms": proof.timestamp_ms,
    })
}

/// Registers the executor from `owner_key`: checks the message was signed for this owner,
/// approves the stake, calls `registerExecutor`. Returns the enclave address and transaction.
pub async fn register(
    http_url: &str,
    owner_key: &str,
    executors: Address,
    request: &RegisterRequest,
) -> Result<(Address, H256)> {
    let owner = wallet(owner_key).context("the owner key")?.address();
    let (mut registration, signed_for) =
        parse_registration(&read_source(&request.registration).await?)?;
    if signed_for != owner {
        bail!(
            "the registration message was signed for owner {signed_for:?}, but the owner key is \
             {owner:?}: the executor's immutable config must name the account that registers it"
        );
    }
    let mut proof = parse_attestation(&read_source(&request.attestation).await?)?;
    proof.signature = request.attestation_signature.clone();
    registration.stake_amount = match request.stake {
        Some(stake) => stake,
        None => ExecutorsTokens::new(executors, client(http_url, owner_key).await?)
            .min_stake_amount()
            .call()
            .await
            .context("reading Executors.MIN_STAKE_AMOUNT")?,
    };
    let enclave = Address::from_slice(&ethers::utils::keccak256(&proof.enclave_public_key)[12..]);
    let tx = register_executor(http_url, owner_key, executors, &registration, &proof).await?;
    Ok((enclave, tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Nitro-shaped attestation document: COSE_Sign1 (tag 18) around a CBOR payload.
    fn nitro_document(public_key: Option<Vec<u8>>) -> Vec<u8> {
        use ciborium::Value as Cbor;
        let pcrs = (0..16u8)
            .map(|i| (Cbor::Integer(i.into()), Cbor::Bytes(vec![i; 48])))
            .collect();
        let payload = Cbor::Map(vec![
            (Cbor::Text("module_id".into()), Cbor::Text("i-0".into())),
            (
                Cbor::Text("timestamp".into()),
                Cbor::Integer(1_700_000_000_123u64.into()),
            ),
            (Cbor::Text("pcrs".into()), Cbor::Map(pcrs)),
            (
                Cbor::Text("public_key".into()),
                public_key.map_or(Cbor::Null, Cbor::Bytes),
            ),
        ]);
        let mut payload_bytes = Vec::new();
        ciborium::into_writer(&payload, &mut payload_bytes).unwrap();
        let cose = Cbor::Tag(
            18,
            Box::new(Cbor::Array(vec![
                Cbor::Bytes(vec![0xa1, 0x01, 0x38, 0x22]),
                Cbor::Map(vec![]),
                Cbor::Bytes(payload_bytes),
                Cbor::Bytes(vec![0; 96]),
            ])),
        );
        let mut out = Vec::new();
        ciborium::into_writer(&cose, &mut out).unwrap();
        out
    }

    #[test]
    fn nitro_documents_parse_raw_or_as_hex() {
        let mut key = vec![4u8];
        key.extend([9u8; 64]);
        let raw = nitro_document(Some(key));
        for bytes in [raw.clone(), hex::encode(&raw).into_bytes()] {
            let proof = parse_attestation(&bytes).unwrap();
            assert_eq!(proof.enclave_public_key, vec![9; 64]);
            assert_eq!(
                (proof.pcr0, proof.pcr1, proof.pcr2),
                (vec![0; 48], vec![1; 48], vec![2; 48])
            );
            assert_eq!(proof.timestamp_ms, 1_700_000_000_123);
        }
        let e = parse_attestation(&nitro_document(None)).unwrap_err();
        assert!(e.to_string().contains("no public_key"), "{e}");
    }

    #[test]
    fn attestations_and_messages_parse_or_say_what_is_wrong() {
        let dev = dev_attestation_json([7; 64]);
        let proof = parse_attestation(dev.to_string().as_bytes()).unwrap();
        assert_eq!(proof.enclave_public_key, vec![7; 64]);
        assert_eq!(proof.pcr1, vec![0x22; 48]);

        let mut short = dev.clone();
        short["pcr2"] = json!("0x1234");
        let e = parse_attestation(short.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("pcr2 has 2 bytes"), "{e}");
        let e = parse_attestation(b"\xd2\x84").unwrap_err();
        assert!(e.to_string().contains("neither JSON nor"), "{e}");

        let message = json!({
            "job_capacity": 4, "sign_timestamp": 1_700_000_000u64, "env": 1,
            "owner": format!("{:?}", Address::repeat_byte(9)),
            "signature": format!("0x{}", "ab".repeat(65)),
        });
        let (registration, owner) = parse_registration(message.to_string().as_bytes()).unwrap();
        assert_eq!(owner, Address::repeat_byte(9));
        assert_eq!(registration.job_capacity, 4);
        let mut bad = message;
        bad["signature"] = json!("0xabcd");
        let e = parse_registration(bad.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains("2 bytes, not 65"), "{e}");
    }
}
