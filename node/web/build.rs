//! Fetches the browser assets both nodes embed (OpenSeadragon and uPlot, from the npm registry,
//! pinned by `assets/package-lock.json`) before the crate is compiled: nothing loads from the internet at
//! run time, and a fresh machine needs only npm.

use std::path::Path;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=assets/package.json");
    println!("cargo:rerun-if-changed=assets/package-lock.json");
    // Read when the script runs, not when it was compiled: clones that share a target
    // directory (CI's cache) share this script's binary, and each must fetch into its own tree.
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .expect("cargo sets CARGO_MANIFEST_DIR for build scripts");
    let assets = Path::new(&manifest_dir).join("assets");
    let marker = assets.join("node_modules/openseadragon/build/openseadragon/openseadragon.min.js");
    let charts = assets.join("node_modules/uplot/dist/uPlot.iife.min.js");
    // Watched too: a clone that shares a target directory with another (CI's cache) has no
    // node_modules of its own, and a missing watched file makes cargo run this script again.
    println!("cargo:rerun-if-changed={}", marker.display());
    println!("cargo:rerun-if-changed={}", charts.display());
    if marker.is_file() && charts.is_file() {
        return;
    }
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&assets)
        .status();
    match status {
        Ok(status) if status.success() && marker.is_file() && charts.is_file() => {}
        Ok(status) => panic!(
            "`npm ci` in {} failed ({status}): the viewer's assets are missing",
            assets.display()
        ),
        Err(error) => {
            panic!("cannot run npm to fetch the viewer's assets ({error}); install Node.js and npm")
        }
    }
}
