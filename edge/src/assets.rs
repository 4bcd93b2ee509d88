//! The edge's own browser scripts, compiled into the binary (OpenSeadragon itself comes from
//! `grassroots_web::assets`, shared with the hub).

use axum::extract::Path;
use axum::response::Response;
use rust_embed::RustEmbed;

pub use grassroots_web::assets::PREFIX;

#[derive(RustEmbed)]
#[folder = "assets/web/"]
struct EdgeScripts;

pub async fn scripts(Path(path): Path<String>) -> Response {
    grassroots_web::assets::serve(EdgeScripts::get(&path), &path)
}
