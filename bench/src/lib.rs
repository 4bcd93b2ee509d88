//! `grassroots bench …`: the benchmarks that measure Grassroots against the peers its issues name,
//! each in one run, side by side, with the figures written under `target/bench/`.
//!
//! Kept out of the binary so that `src/` is only the command line. A benchmark is a harness: it
//! starts real processes (the binary itself, peers installed by `scripts/bench-peers`), drives
//! them and reports to a person, so like the binary it reports errors with `anyhow` rather than
//! a typed enum no caller would match on.
//!
//! - [`link`]: bulk goodput over QUIC against TCP+TLS, on loopback and an emulated county link;
//! - [`tiles`]: tile serving against openslide-python's deepzoom_server and iipsrv;
//! - [`viewers`]: many people viewing at once on one edge, against nginx's ceiling;
//! - [`screen`]: a whole slide's triage, and tract against onnxruntime;
//! - [`consult`]: an expert's session through the hub against an nginx reverse proxy;
//! - [`fl`]: federated rounds against Flower's deployment engine;
//! - [`dicom`]: C-STORE ingest from storescu into the edge against Orthanc;
//! - [`render`]: server-side CT rendering (MPR, MIP, volume rendering) against VTK, and
//!   1 to 160 viewers at once on the edge's render socket;
//! - [`coverage`]: the health authorities' dashboard of 2,000 sites and two years, against its goals;
//! - [`netem`]: the user-space link emulator the network benchmarks run over.

pub mod consult;
pub mod coverage;
pub mod dicom;
pub mod fl;
pub mod link;
pub mod netem;
pub mod render;
pub mod screen;
pub mod tiles;
pub mod viewers;
