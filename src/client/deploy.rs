//! Deploys the dev contracts (contracts/artifacts, compiled from contracts/*.sol) and wires them:
//! UserCode, Executors(attestationMaxAge), Jobs(executors, buffer, signMaxAge, nodes), then the
//! dev-only `Executors.setJobsContract(jobs)`.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use ethers::abi::{Abi, Tokenize};
use ethers::contract::ContractFactory;
use ethers::types::{Address, Bytes, U256};
use serde::Deserialize;

use super::{client, Client};

const EXECUTORS_ARTIFACT: &str = include_str!("../../contracts/artifacts/Executors.json");
const JOBS_ARTIFACT: &str = include_str!("../../contracts/artifacts/Jobs.json");
const USER_CODE_ARTIFACT: &str = include_str!("../../contracts/artifacts/UserCode.json");

/// The constructor arguments of a dev deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeployParams {
    /// `Jobs.EXECUTION_BUFFER_TIME`, seconds.
    pub execution_buffer_secs: u64,
    /// `Jobs.SIGN_MAX_AGE`, seconds.
    pub sign_max_age_secs: u64,
    /// `Executors.ATTESTATION_MAX_AGE`, seconds.
    pub attestation_max_age_secs: u64,
    /// `Jobs.NO_OF_NODES_TO_SELECT`.
    pub executors_to_select: u8,
}

impl Default for DeployParams {
    fn default() -> Self {
        Self {
            execution_buffer_secs: 60,
            sign_max_age_secs: 600,
            attestation_max_age_secs: 600,
            executors_to_select: 3,
        }
    }
}

/// Where the contracts of one deployment live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deployment {
    pub executors: Address,
    pub jobs: Address,
    pub user_code: Address,
}

#[derive(Deserialize)]
struct Artifact {
    #[serde(rename = "contractName")]
    name: String,
    abi: Abi,
    bytecode: Bytes,
}

fn artifact(json: &str) -> Result<Artifact> {
    serde_json::from_str(json).context("a contract artifact in contracts/artifacts is malformed")
}

async fn deploy<T: Tokenize>(
    client: &Arc<Client>,
    artifact: &Artifact,
    args: T,
) -> Result<Address> {
    let factory = ContractFactory::new(
        artifact.abi.clone(),
        artifact.bytecode.clone(),
        client.clone(),
    );
    let (contract, receipt) = factory
        .deploy(args)
        .with_context(|| format!("encoding the {} constructor", artifact.name))?
        .send_with_receipt()
        .await
        .with_context(|| format!("deploying {}", artifact.name))?;
    if receipt.status != Some(1u64.into()) {
        bail!("deploying {} reverted", artifact.name);
    }
    Ok(contract.address())
}

/// Deploys UserCode, Executors and Jobs from `deployer_key` and wires Jobs into Executors.
pub async fn deploy_dev_contracts(
    http_url: &str,
    deployer_key: &str,
    params: DeployParams,
) -> Result<Deployment> {
    let client = client(http_url, deployer_key).await?;
    let executors_artifact = artifact(EXECUTORS_ARTIFACT)?;
    let user_code = deploy(&client, &artifact(USER_CODE_ARTIFACT)?, ()).await?;
    let executors = deploy(
        &client,
        &executors_artifact,
        U256::from(params.attestation_max_age_secs),
    )
    .await?;
    let jobs = deploy(
        &client,
        &artifact(JOBS_ARTIFACT)?,
        (
            executors,
            U256::from(params.execution_buffer_secs),
            U256::from(params.sign_max_age_secs),
            U256::from(params.executors_to_select),
        ),
    )
    .await?;

    let contract = ethers::contract::Contract::new(executors, executors_artifact.abi, client);
    let receipt = contract
        .method::<_, ()>("setJobsContract", jobs)
        .context("encoding setJobsContract")?
        .send()
        .await
        .context("Executors.setJobsContract")?
        .await
        .context("waiting for Executors.setJobsContract")?
        .ok_or_else(|| anyhow!("Executors.setJobsContract was dropped from the mempool"))?;
    if receipt.status != Some(1u64.into()) {
        bail!("Executors.setJobsContract reverted");
    }
    tracing::info!(?executors, ?jobs, ?user_code, "dev contracts deployed");
    Ok(Deployment {
        executors,
        jobs,
        user_code,
    })
}
