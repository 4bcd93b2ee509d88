//! `grassroots bench link` (filled in below).
use anyhow::Result;
use clap::Args;

#[derive(Args)]
pub struct LinkBenchArgs {}

pub async fn run(_args: LinkBenchArgs) -> Result<()> {
    anyhow::bail!("not yet")
}
