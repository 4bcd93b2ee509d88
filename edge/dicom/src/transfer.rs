//! Transfer functions: what colour and how opaque each value of a CT or MR is drawn in a
//! volume rendering. Presets are defined as radiographers know them, in HU per millimetre of
//! tissue, and tabulated once per picture for its sample distance; the table also says which
//! value ranges show anything at all, which is what lets rays leap ([`crate::empty_space`]).

/// Transfer-function presets, named as radiographers know them.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Deserialize,
    serde::Serialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// Bone opaque and white; soft tissue and air transparent.
    #[default]
    Bone,
    /// Skin and muscle translucent red, fat yellowish, bone white.
    SoftTissue,
    /// Lung parenchyma and airways: the air-filled structures, tissue around faint.
    Lung,
    /// Contrast-filled vessels red over faint bone (CT angiography).
    Vessels,
}

/// One control point of a transfer function: at `value` HU, this colour and this opacity per
/// millimetre of tissue; linear in between, the end points' beyond them.
type ControlPoint = (f32, [f32; 3], f32);

/// How many presets there are: what is kept per preset is kept in arrays this long.
pub(crate) const PRESETS: usize = 4;

impl Preset {
    /// The preset's place in the enum (below [`PRESETS`]), for what is kept per preset.
    pub(crate) fn index(self) -> usize {
        match self {
            Preset::Bone => 0,
            Preset::SoftTissue => 1,
            Preset::Lung => 2,
            Preset::Vessels => 3,
        }
    }

    fn points(self) -> &'static [ControlPoint] {
        match self {
            Preset::Bone => &[
                (150.0, [0.9, 0.6, 0.4], 0.0),
                (300.0, [1.0, 0.9, 0.8], 0.25),
                (1000.0, [1.0, 1.0, 1.0], 0.9),
                (3071.0, [1.0, 1.0, 1.0], 0.9),
            ],
            Preset::SoftTissue => &[
                (-500.0, [0.7, 0.4, 0.3], 0.0),
                (-100.0, [0.9, 0.8, 0.5], 0.015),
                (20.0, [0.8, 0.3, 0.25], 0.04),
                (80.0, [0.9, 0.45, 0.35], 0.08),
                (300.0, [1.0, 0.95, 0.9], 0.4),
                (3071.0, [1.0, 1.0, 1.0], 0.8),
            ],
            Preset::Lung => &[
                (-1000.0, [0.3, 0.5, 0.9], 0.0),
                (-900.0, [0.4, 0.6, 1.0], 0.0),
                (-700.0, [0.6, 0.75, 1.0], 0.03),
                (-400.0, [0.9, 0.6, 0.5], 0.12),
                (-200.0, [0.9, 0.5, 0.4], 0.0),
            ],
            Preset::Vessels => &[
                (120.0, [0.8, 0.1, 0.1], 0.0),
                (200.0, [0.9, 0.2, 0.15], 0.3),
                (400.0, [1.0, 0.6, 0.5], 0.6),
                (700.0, [1.0, 1.0, 1.0], 0.2),
                (3071.0, [1.0, 1.0, 1.0], 0.2),
            ],
        }
    }

    /// Colour and opacity per millimetre at `value`.
    pub(crate) fn at(self, value: f32) -> ([f32; 3], f32) {
        let points = self.points();
        let (first, last) = (points[0], points[points.len() - 1]);
        // Beyond the ends the end points hold (as VTK's transfer functions do): bone and metal
        // above the last point stay opaque.
        if value <= first.0 {
            return (first.1, first.2);
        }
        if value >= last.0 {
            return (last.1, last.2);
        }
        for pair in points.windows(2) {
            let ((v0, c0, a0), (v1, c1, a1)) = (pair[0], pair[1]);
            if value <= v1 {
                let t = (value - v0) / (v1 - v0).max(f32::EPSILON);
                let colour = [
                    c0[0] + (c1[0] - c0[0]) * t,
                    c0[1] + (c1[1] - c0[1]) * t,
                    c0[2] + (c1[2] - c0[2]) * t,
                ];
                return (colour, a0 + (a1 - a0) * t);
            }
        }
        ([0.0; 3], 0.0)
    }
}

/// Entries of a transfer function's lookup table, spanning the volume's value range.
pub(crate) const TABLE_SIZE: usize = 4096;

/// A preset tabulated for one volume and one sample distance: premultiplied colour and the
/// opacity of one sample, and which table ranges show anything.
pub(crate) struct TransferTable {
    pub(crate) entries: Box<[[f32; 4]; TABLE_SIZE]>,
    /// `visible_before[i]`: how many entries below `i` have any opacity per millimetre, whatever
    /// the sample distance (so that where rays may leap depends on the preset alone).
    visible_before: Vec<u32>,
    pub(crate) low: f32,
    pub(crate) per_entry: f32,
}

impl TransferTable {
    pub(crate) fn new(preset: Preset, low: f32, high: f32, step_mm: f64) -> TransferTable {
        let per_entry = ((high - low) / (TABLE_SIZE - 1) as f32).max(f32::EPSILON);
        let entries = Box::new(std::array::from_fn(|i| {
            let (colour, per_mm) = preset.at(low + i as f32 * per_entry);
            // Opacity per millimetre, corrected to the sample distance.
            let alpha = 1.0 - (1.0 - per_mm.clamp(0.0, 1.0)).powf(step_mm as f32);
            [
                colour[0] * alpha,
                colour[1] * alpha,
                colour[2] * alpha,
                alpha,
            ]
        }));
        let mut visible_before = Vec::with_capacity(TABLE_SIZE + 1);
        let mut count = 0u32;
        for i in 0..TABLE_SIZE {
            visible_before.push(count);
            count += u32::from(preset.at(low + i as f32 * per_entry).1 > 0.0);
        }
        visible_before.push(count);
        TransferTable {
            entries,
            visible_before,
            low,
            per_entry,
        }
    }

    fn index(&self, value: f32) -> usize {
        (((value - self.low) / self.per_entry) as isize).clamp(0, TABLE_SIZE as isize - 1) as usize
    }

    /// Whether any value in `low..=high` is shown, or in the entries either side (the
    /// renderer reads values rounded to its bricks' 16-bit steps: never a whole entry off).
    pub(crate) fn shows_any(&self, low: f32, high: f32) -> bool {
        let (a, b) = (
            self.index(low).saturating_sub(1),
            (self.index(high) + 1).min(TABLE_SIZE - 1),
        );
        self.visible_before[b + 1] > self.visible_before[a]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_beyond_the_last_point_stay_opaque() {
        assert_eq!(Preset::Bone.at(5000.0), Preset::Bone.at(3071.0));
        assert!(Preset::Bone.at(5000.0).1 > 0.5);
        assert_eq!(Preset::Bone.at(-2000.0).1, 0.0);
        assert_eq!(Preset::Lung.at(500.0).1, 0.0);
    }

    #[test]
    fn every_preset_has_a_place_of_its_own() {
        let all = [
            Preset::Bone,
            Preset::SoftTissue,
            Preset::Lung,
            Preset::Vessels,
        ];
        let mut places: Vec<usize> = all.iter().map(|p| p.index()).collect();
        places.sort_unstable();
        assert_eq!(places, (0..PRESETS).collect::<Vec<_>>());
    }

    #[test]
    fn a_range_shows_anything_when_an_entry_beside_it_does() {
        let table = TransferTable::new(Preset::Bone, -1000.0, 3000.0, 1.0);
        assert!(!table.shows_any(-1000.0, 100.0));
        assert!(table.shows_any(-1000.0, 200.0));
        // Within one entry below the first visible value: counted as showing (rounding).
        assert!(table.shows_any(149.5, 149.8));
        assert!(!table.shows_any(-500.0, -400.0));
    }
}
