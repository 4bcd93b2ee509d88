//! The expert's viewing session that `bench consult` replays, and the Deep Zoom arithmetic that
//! turns each view into the tiles a viewer needs.
//!
//! The session is what a pathologist does with a referral in OpenSeadragon at a 1600 x 900
//! browser window: open the slide (the level where it fits), zoom in two-fold per step on the
//! first region down to full resolution, pan a few screens around it, zoom out, go to the second
//! region, zoom in again, pan. For each view the viewer needs the tiles of one level — the
//! coarsest with at least one image pixel per screen pixel — that cover the viewport; a tile it
//! already has (from an earlier view) is not asked for again, as OpenSeadragon keeps its tiles.
//! The arithmetic follows `edge/slides/src/deepzoom.rs` (levels halve, sizes rounded up).

use std::collections::HashSet;

use anyhow::Result;
use grassroots_deepzoom::Descriptor;
use serde::Serialize;

/// The browser window the expert views the slide in, CSS pixels.
pub const SCREEN: (f64, f64) = (1600.0, 900.0);

/// Pans move the view by this share of a screen (a drag across most of the window).
const PAN: f64 = 0.75;

/// Zoom-out steps after the first region.
const ZOOM_OUT_STEPS: usize = 3;

/// A slide's Deep Zoom pyramid, from its descriptor (its geometry is grassroots-deepzoom's,
/// as at the edge and the hub).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct DeepZoom {
    pub width: u32,
    pub height: u32,
    pub tile_size: u32,
    pub overlap: u32,
    pub levels: u32,
    #[serde(skip)]
    descriptor: Descriptor,
}

/// One tile of the pyramid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tile {
    pub level: u32,
    pub col: u32,
    pub row: u32,
}

impl Tile {
    /// The Deep Zoom path below `{slide}_files/`, without the extension: `LEVEL/COL_ROW`.
    pub fn path(&self) -> String {
        format!("{}/{}_{}", self.level, self.col, self.row)
    }
}

/// A rectangle in full-resolution (level-0) slide pixels.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Region {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

impl Region {
    fn centre(&self) -> (f64, f64) {
        (
            f64::from(self.x) + f64::from(self.width) / 2.0,
            f64::from(self.y) + f64::from(self.height) / 2.0,
        )
    }
}

/// What is on the screen: its centre in level-0 pixels and the zoom (screen pixels per level-0
/// pixel).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Viewport {
    pub centre_x: f64,
    pub centre_y: f64,
    pub scale: f64,
}

/// One view of the session and the tiles it needs that the viewer does not already have.
#[derive(Debug, Clone, Serialize)]
pub struct View {
    pub action: &'static str,
    pub viewport: Viewport,
    pub level: u32,
    /// Tiles covering the viewport.
    pub covering: usize,
    #[serde(skip)]
    pub new_tiles: Vec<Tile>,
}

impl DeepZoom {
    fn from_descriptor(descriptor: Descriptor) -> Self {
        Self {
            width: descriptor.width,
            height: descriptor.height,
            tile_size: descriptor.tile_size,
            overlap: descriptor.overlap,
            levels: descriptor.levels(),
            descriptor,
        }
    }

    #[cfg(test)]
    fn new(width: u32, height: u32, tile_size: u32, overlap: u32) -> Result<Self> {
        Ok(Self::from_descriptor(Descriptor::new(
            width,
            height,
            tile_size,
            overlap,
            grassroots_deepzoom::Format::Jpeg,
        )?))
    }

    /// Reads a `.dzi` descriptor (`<Image TileSize Overlap ...><Size Width Height/>`).
    pub fn parse(xml: &str) -> Result<Self> {
        Ok(Self::from_descriptor(Descriptor::parse(xml)?))
    }

    pub fn top_level(&self) -> u32 {
        self.descriptor.top_level()
    }

    /// Level-0 pixels per pixel of `level` (levels above the top are the top).
    fn downsample(&self, level: u32) -> f64 {
        f64::from(self.descriptor.downsample(level).unwrap_or(1))
    }

    fn level_size(&self, level: u32) -> (u32, u32) {
        self.descriptor
            .level_size(level)
            .unwrap_or((self.width, self.height))
    }

    /// The coarsest level that still has at least one image pixel per screen pixel at `scale`.
    pub fn level_for(&self, scale: f64) -> u32 {
        // The tiny slack keeps a scale that is exactly a power of two on its own level.
        let halvings = (1.0 / scale).log2() + 1e-9;
        let halvings = if halvings.is_finite() && halvings > 0.0 {
            (halvings.floor() as u32).min(self.top_level())
        } else {
            0
        };
        self.top_level() - halvings
    }

    /// The zoom at which the whole slide fits the screen (the viewer's home view).
    pub fn fit_scale(&self) -> f64 {
        (SCREEN.0 / f64::from(self.width)).min(SCREEN.1 / f64::from(self.height))
    }

    /// The tiles of the viewport's level that cover the part of the slide on screen.
    pub fn covering(&self, view: &Viewport) -> (u32, Vec<Tile>) {
        let level = self.level_for(view.scale);
        let (half_w, half_h) = (SCREEN.0 / 2.0 / view.scale, SCREEN.1 / 2.0 / view.scale);
        let (width, height) = (f64::from(self.width), f64::from(self.height));
        let x0 = (view.centre_x - half_w).clamp(0.0, width);
        let x1 = (view.centre_x + half_w).clamp(0.0, width);
        let y0 = (view.centre_y - half_h).clamp(0.0, height);
        let y1 = (view.centre_y + half_h).clamp(0.0, height);
        if x1 <= x0 || y1 <= y0 {
            return (level, Vec::new());
        }
        let (level_w, level_h) = self.level_size(level);
        let (cols, rows) = (
            level_w.div_ceil(self.tile_size),
            level_h.div_ceil(self.tile_size),
        );
        let (down, tile) = (self.downsample(level), f64::from(self.tile_size));
        // Tile `c` holds level pixels [c * tile, (c + 1) * tile) (plus the overlap, which does
        // not change which tiles a viewer asks for).
        let index = |level_px: f64, count: u32| ((level_px / tile).floor() as u32).min(count - 1);
        let (c0, c1) = (index(x0 / down, cols), index((x1 / down) - 1e-6, cols));
        let (r0, r1) = (index(y0 / down, rows), index((y1 / down) - 1e-6, rows));
        let mut tiles = Vec::new();
        for row in r0..=r1 {
            for col in c0..=c1 {
                tiles.push(Tile { level, col, row });
            }
        }
        (level, tiles)
    }
}

/// The session: open, zoom into `first`, pan around it, zoom out, go to `second`, zoom in, pan.
pub fn session(zoom: &DeepZoom, first: Region, second: Region) -> Vec<View> {
    let fit = zoom.fit_scale();
    let (width, height) = (f64::from(zoom.width), f64::from(zoom.height));
    let mut seen: HashSet<Tile> = HashSet::new();
    let mut views = Vec::new();
    let mut show = |action: &'static str, viewport: Viewport| {
        let (level, covering) = zoom.covering(&viewport);
        let count = covering.len();
        let new_tiles: Vec<Tile> = covering.into_iter().filter(|t| seen.insert(*t)).collect();
        views.push(View {
            action,
            viewport,
            level,
            covering: count,
            new_tiles,
        });
    };
    let pan = |viewport: &mut Viewport, dx: f64, dy: f64| {
        viewport.centre_x =
            (viewport.centre_x + dx * PAN * SCREEN.0 / viewport.scale).clamp(0.0, width);
        viewport.centre_y =
            (viewport.centre_y + dy * PAN * SCREEN.1 / viewport.scale).clamp(0.0, height);
    };

    show(
        "open",
        Viewport {
            centre_x: width / 2.0,
            centre_y: height / 2.0,
            scale: fit,
        },
    );
    let (x, y) = first.centre();
    let mut viewport = Viewport {
        centre_x: x,
        centre_y: y,
        scale: fit,
    };
    while zoom.level_for(viewport.scale) < zoom.top_level() {
        viewport.scale *= 2.0;
        show("zoom in on region 1", viewport);
    }
    for (dx, dy) in [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0), (-1.0, 0.0)] {
        pan(&mut viewport, dx, dy);
        show("pan", viewport);
    }
    for _ in 0..ZOOM_OUT_STEPS {
        if viewport.scale / 2.0 < fit {
            break;
        }
        viewport.scale /= 2.0;
        show("zoom out", viewport);
    }
    let (x, y) = second.centre();
    viewport.centre_x = x;
    viewport.centre_y = y;
    show("go to region 2", viewport);
    while zoom.level_for(viewport.scale) < zoom.top_level() {
        viewport.scale *= 2.0;
        show("zoom in on region 2", viewport);
    }
    for (dx, dy) in [(1.0, 0.0), (0.0, 1.0), (-1.0, 0.0)] {
        pan(&mut viewport, dx, dy);
        show("pan", viewport);
    }
    views
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `big.tif` of the fixtures: the SVS replicated 40 x 40, 256-pixel stored tiles.
    fn big() -> DeepZoom {
        DeepZoom::new(88_800, 118_680, 256, 0).unwrap()
    }

    #[test]
    fn the_descriptor_is_read_as_the_edge_writes_it() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<Image xmlns="http://schemas.microsoft.com/deepzoom/2008" Format="jpeg" Overlap="1" TileSize="254"><Size Height="2967" Width="2220"/></Image>"#;
        let zoom = DeepZoom::parse(xml).unwrap();
        assert_eq!(zoom, DeepZoom::new(2220, 2967, 254, 1).unwrap());
        // 2967 halves to 1 in 12 steps: 13 levels, as deepzoom.rs counts them.
        assert_eq!(zoom.levels, 13);
        assert!(DeepZoom::parse("<Image/>").is_err());
    }

    #[test]
    fn the_home_view_asks_for_the_level_where_the_slide_fits() {
        let zoom = big();
        assert_eq!(zoom.levels, 18);
        let home = Viewport {
            centre_x: 44_400.0,
            centre_y: 59_340.0,
            scale: zoom.fit_scale(),
        };
        // 900 / 118,680 px: one screen pixel is 131.9 slide pixels, so the level downsampled
        // 128 times (694 x 928 px, 3 x 4 tiles) is the coarsest with a pixel per screen pixel.
        let (level, tiles) = zoom.covering(&home);
        assert_eq!(level, 17 - 7);
        assert_eq!(zoom.level_size(level), (694, 928));
        assert_eq!(tiles.len(), 12);
    }

    #[test]
    fn a_full_resolution_view_needs_the_tiles_under_the_window() {
        let zoom = big();
        // 1600 x 900 screen pixels from (1280, 1280): columns 5 to 11, rows 5 to 8.
        let view = Viewport {
            centre_x: 1280.0 + 800.0,
            centre_y: 1280.0 + 450.0,
            scale: 1.0,
        };
        let (level, tiles) = zoom.covering(&view);
        assert_eq!(level, zoom.top_level());
        assert_eq!(tiles.len(), 7 * 4);
        assert_eq!(
            tiles[0],
            Tile {
                level,
                col: 5,
                row: 5
            }
        );
        assert_eq!(
            tiles[27],
            Tile {
                level,
                col: 11,
                row: 8
            }
        );
        // At the slide's corner only the tiles inside the slide are asked for.
        let corner = Viewport {
            centre_x: 0.0,
            centre_y: 0.0,
            scale: 1.0,
        };
        assert_eq!(zoom.covering(&corner).1.len(), 4 * 2);
    }

    #[test]
    fn the_session_zooms_two_fold_to_full_resolution_and_never_asks_twice() {
        let zoom = big();
        let first = Region {
            x: 26_000,
            y: 42_000,
            width: 2_220,
            height: 2_967,
        };
        let second = Region {
            x: 60_000,
            y: 73_000,
            width: 2_220,
            height: 2_967,
        };
        let views = session(&zoom, first, second);
        let actions: Vec<&str> = views.iter().map(|v| v.action).collect();
        assert_eq!(actions[0], "open");
        // From 1/131.9 to 1/1.03 in seven doublings.
        assert_eq!(
            actions
                .iter()
                .filter(|a| **a == "zoom in on region 1")
                .count(),
            7
        );
        assert_eq!(actions.iter().filter(|a| **a == "zoom out").count(), 3);
        assert_eq!(actions.iter().filter(|a| **a == "pan").count(), 7);
        assert_eq!(views.len(), 1 + 7 + 4 + 3 + 1 + 3 + 3);
        for view in &views {
            // One screen pixel is at least one and less than two image pixels of the level
            // (the home view excepted when the slide is smaller than the screen).
            let image_per_screen = zoom.downsample(view.level).recip() / view.viewport.scale;
            assert!(
                (1.0 - 1e-6..2.0).contains(&image_per_screen),
                "{view:?}: {image_per_screen}"
            );
            assert!(view.new_tiles.iter().all(|t| t.level == view.level));
        }
        let mut all: Vec<Tile> = views.iter().flat_map(|v| v.new_tiles.clone()).collect();
        let total = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), total, "a tile asked for twice");
        // Full-resolution views need a window's worth of tiles (7 x 4 or 8 x 5).
        let deepest = views.iter().find(|v| v.level == zoom.top_level()).unwrap();
        assert!((28..=40).contains(&deepest.covering), "{deepest:?}");
    }

    #[test]
    fn a_slide_smaller_than_the_screen_opens_at_full_resolution() {
        let zoom = DeepZoom::new(1000, 600, 254, 1).unwrap();
        let region = Region {
            x: 100,
            y: 100,
            width: 200,
            height: 200,
        };
        let views = session(&zoom, region, region);
        assert_eq!(views[0].level, zoom.top_level());
        assert_eq!(views[0].new_tiles.len(), 4 * 3);
        // Nothing to zoom into: the rest are pans over tiles already there.
        assert!(views[1..].iter().all(|v| v.level == zoom.top_level()));
    }
}
