//! Label OCR on real data: the label of the real Aperio SVS, and generated labels with known text
//! (rendered with a real font by libvips, then rotated, blurred and noised).

use std::path::PathBuf;

use grassroots_models::LabelReader;

fn fixtures() -> PathBuf {
    PathBuf::from(
        std::env::var("GRASSROOTS_FIXTURES")
            .expect("set GRASSROOTS_FIXTURES (scripts/fetch-fixtures)"),
    )
}

#[test]
fn reads_the_label_of_the_real_svs() {
    let reader = LabelReader::load(&fixtures().join("ocr")).unwrap();
    let slide = grassroots_slides::Slide::open(&fixtures().join("cmu_small_region.svs")).unwrap();
    let label = image::load_from_memory(&slide.associated_image("label").unwrap())
        .unwrap()
        .to_rgb8();
    let lines = reader.read(&label).unwrap();
    println!("the real SVS label (hand-written \"CMU-1\", vertical) reads: {lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].text.to_uppercase().starts_with("CMU"), "{lines:?}");
}

/// A label with known text: a pathology number and a hospital line, rendered by libvips (Pango,
/// DejaVu Sans), then rotated, blurred and noised by a seeded generator.
fn generated_label(number: &str, seed: u64, dir: &std::path::Path) -> image::RgbImage {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let path = dir.join(format!("label-{seed}.png"));
    let markup = format!("{number}\nLankao County\nHE {}/3", 1 + seed % 3);
    let status = std::process::Command::new("vips")
        .args([
            "text",
            path.to_str().unwrap(),
            &markup,
            "--font",
            "DejaVu Sans Bold 22",
            "--dpi",
            "96",
        ])
        .status()
        .expect("vips (libvips-tools) renders the labels");
    assert!(status.success());
    let text = image::open(&path).unwrap().to_luma8();
    // Black text on a white label with a margin.
    let (w, h) = (text.width() + 40, text.height() + 40);
    let mut label = image::RgbImage::from_pixel(w, h, image::Rgb([250, 250, 245]));
    for (x, y, p) in text.enumerate_pixels() {
        let ink = 255 - p[0];
        label.put_pixel(
            x + 20,
            y + 20,
            image::Rgb([ink, ink, ink.saturating_sub(5)]),
        );
    }
    // Rotation (nearest neighbour, about the centre), up to 4 degrees either way.
    let angle = rng.gen_range(-4.0f32..4.0).to_radians();
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let rotated = image::RgbImage::from_fn(w, h, |x, y| {
        let (dx, dy) = (x as f32 - cx, y as f32 - cy);
        let (sx, sy) = (
            cx + dx * angle.cos() + dy * angle.sin(),
            cy - dx * angle.sin() + dy * angle.cos(),
        );
        if sx >= 0.0 && sy >= 0.0 && (sx as u32) < w && (sy as u32) < h {
            *label.get_pixel(sx as u32, sy as u32)
        } else {
            image::Rgb([250, 250, 245])
        }
    });
    let mut blurred = image::imageops::blur(&rotated, rng.gen_range(0.0f32..1.2));
    for pixel in blurred.pixels_mut() {
        for channel in pixel.0.iter_mut() {
            *channel =
                (f32::from(*channel) + rng.gen_range(-20.0f32..20.0)).clamp(0.0, 255.0) as u8;
        }
    }
    blurred
}

#[test]
fn pathology_numbers_are_read_from_generated_labels() {
    use rand::{Rng, SeedableRng};
    let reader = LabelReader::load(&fixtures().join("ocr")).unwrap();
    let pattern = regex::Regex::new(r"[A-Z]\d{2}-\d{5}").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(2024);
    let mut exact = 0;
    let total = 50;
    let mut misses = Vec::new();
    for seed in 0..total {
        let letter = ['S', 'B', 'C', 'F'][rng.gen_range(0..4)];
        let number = format!(
            "{letter}{:02}-{:05}",
            rng.gen_range(18..27),
            rng.gen_range(0..100_000)
        );
        let label = generated_label(&number, seed, dir.path());
        let lines = reader.read(&label).unwrap();
        match grassroots_models::find_pathology_number(&lines, &pattern) {
            Some((read, _)) if read == number => exact += 1,
            other => misses.push(format!(
                "{number}: read {other:?} from {:?}",
                lines.iter().map(|l| &l.text).collect::<Vec<_>>()
            )),
        }
    }
    let fraction = exact as f64 / total as f64;
    println!(
        "proxy labels: {exact}/{total} pathology numbers read exactly ({:.0}%)",
        fraction * 100.0
    );
    for miss in &misses {
        println!("  miss: {miss}");
    }
    assert!(
        fraction >= 0.8,
        "{exact}/{total} read exactly:\n{}",
        misses.join("\n")
    );
}
