//! Browser assets compiled into every node's binary: OpenSeadragon and uPlot (fetched from npm
//! by `build.rs`, pinned by `assets/package-lock.json`), served at [`PREFIX`]`/osd/…` and
//! [`PREFIX`]`/uplot/…`, the CT/MR viewer's scripts at [`PREFIX`]`/viewer/…`, and the helper both nodes use to serve their own scripts. Served without sign-in — they are generic
//! code, no data — and cacheable for good: a new binary is a new URL prefix.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::RustEmbed;

#[derive(RustEmbed)]
#[folder = "assets/node_modules/openseadragon/build/openseadragon/"]
#[include = "openseadragon.min.js"]
#[include = "images/*.png"]
struct OpenSeadragon;

/// uPlot, the charts of the hub's rounds page and (later) the authorities' dashboard.
#[derive(RustEmbed)]
#[folder = "assets/node_modules/uplot/dist/"]
#[include = "uPlot.iife.min.js"]
#[include = "uPlot.min.css"]
struct UPlot;

/// The CT/MR viewer's scripts (the render socket, the reformatting and volume-rendering
/// views): the edge's own viewer and the hub's consult of a referred study run the same
/// scripts, each page naming the socket its frames come from (`data-socket`).
#[derive(RustEmbed)]
#[folder = "src/viewer/"]
struct StudyViewer;

/// URL prefix of the embedded assets, versioned so that browsers may cache them for good.
pub const PREFIX: &str = concat!("/assets/", env!("CARGO_PKG_VERSION"));

/// Serves an embedded file with its type and an immutable cache header.
pub fn serve(file: Option<rust_embed::EmbeddedFile>, path: &str) -> Response {
    match file {
        Some(file) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            (
                [
                    (header::CONTENT_TYPE, mime.to_string()),
                    (
                        header::CACHE_CONTROL,
                        "public, max-age=31536000, immutable".to_string(),
                    ),
                ],
                file.data.into_owned(),
            )
                .into_response()
        }
        None => (StatusCode::NOT_FOUND, "no such asset").into_response(),
    }
}

/// `GET PREFIX/osd/{*path}`
pub async fn openseadragon(Path(path): Path<String>) -> Response {
    serve(OpenSeadragon::get(&path), &path)
}

/// `GET PREFIX/viewer/{*path}`
pub async fn study_viewer(Path(path): Path<String>) -> Response {
    serve(StudyViewer::get(&path), &path)
}

/// `GET PREFIX/uplot/{*path}`
pub async fn uplot(Path(path): Path<String>) -> Response {
    serve(UPlot::get(&path), &path)
}
