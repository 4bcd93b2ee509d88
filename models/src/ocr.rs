//! Reading slide labels: PP-OCRv4 text detection and recognition (the ONNX models that the
//! `rapidocr-onnxruntime` wheel ships), run by tract.
//!
//! Both models are loaded, shape-fixed and optimised once ([`LabelReader::load`]); each label is
//! then one detection pass (a text-probability map, thresholded into line boxes as PaddleOCR's
//! DB post-processing does, here with axis-aligned boxes) and one recognition pass per line
//! (greedy CTC decoding over the character list stored in the recognition model's metadata).

use std::path::Path;
use std::sync::Arc;

use image::RgbImage;
use tract_onnx::prelude::*;

use crate::ModelError;

const DET_HEIGHT: usize = 320;
const DET_WIDTH: usize = 640;
const REC_HEIGHT: usize = 48;
const REC_WIDTH: usize = 320;
/// Probability above which a pixel counts as text (PaddleOCR's `thresh`).
const PIXEL_THRESHOLD: f32 = 0.3;
/// Mean probability a line box needs (`box_thresh`).
const BOX_THRESHOLD: f32 = 0.5;
/// How far boxes grow around the shrunk text kernels the model predicts (`unclip_ratio`).
const UNCLIP_RATIO: f32 = 1.6;

/// One line of text read from an image.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TextLine {
    pub text: String,
    /// Mean probability of the decoded characters.
    pub confidence: f32,
    /// Probability of each character of `text`, in order.
    pub character_confidences: Vec<f32>,
    /// x, y, width, height in the input image.
    pub bbox: (u32, u32, u32, u32),
}

struct Reading {
    text: String,
    confidence: f32,
    per_character: Vec<f32>,
}

pub struct LabelReader {
    detector: Arc<TypedRunnableModel>,
    recogniser: Arc<TypedRunnableModel>,
    characters: Vec<String>,
}

fn model_error(path: &Path, error: impl std::fmt::Display) -> ModelError {
    ModelError::Load {
        path: path.display().to_string(),
        reason: error.to_string(),
    }
}

fn load(path: &Path, shape: [usize; 4]) -> Result<Arc<TypedRunnableModel>, ModelError> {
    tract_onnx::onnx()
        .model_for_path(path)
        .and_then(|model| model.with_input_fact(0, f32::fact(shape).into()))
        .and_then(|model| model.into_optimized())
        .and_then(|model| model.into_runnable())
        .map_err(|e| model_error(path, e))
}

/// The recognition model's character list, stored in its metadata under `character`.
fn characters(path: &Path) -> Result<Vec<String>, ModelError> {
    use prost::Message;
    let bytes = std::fs::read(path).map_err(|e| model_error(path, e))?;
    let proto =
        tract_onnx::pb::ModelProto::decode(bytes.as_slice()).map_err(|e| model_error(path, e))?;
    let list = proto
        .metadata_props
        .iter()
        .find(|entry| entry.key == "character")
        .ok_or_else(|| model_error(path, "no `character` list in the model's metadata"))?;
    Ok(list.value.split('\n').map(str::to_string).collect())
}

/// Normalised CHW tensor data in BGR order (as the models were trained with OpenCV).
fn to_tensor(image: &RgbImage, height: usize, width: usize) -> Result<Tensor, ModelError> {
    let mut data = vec![0f32; 3 * height * width];
    for (x, y, pixel) in image.enumerate_pixels() {
        let (x, y) = (x as usize, y as usize);
        if x >= width || y >= height {
            continue;
        }
        for (channel, value) in [pixel[2], pixel[1], pixel[0]].into_iter().enumerate() {
            data[channel * height * width + y * width + x] = (f32::from(value) / 255.0 - 0.5) / 0.5;
        }
    }
    // Padding is 0 after normalisation, i.e. mid-grey, as PaddleOCR pads.
    Tensor::from_shape(&[1, 3, height, width], &data)
        .map_err(|e| ModelError::Inference(e.to_string()))
}

impl LabelReader {
    /// Loads `ch_PP-OCRv4_det_infer.onnx` and `ch_PP-OCRv4_rec_infer.onnx` from `dir`.
    pub fn load(dir: &Path) -> Result<Self, ModelError> {
        let det = dir.join("ch_PP-OCRv4_det_infer.onnx");
        let rec = dir.join("ch_PP-OCRv4_rec_infer.onnx");
        Ok(Self {
            detector: load(&det, [1, 3, DET_HEIGHT, DET_WIDTH])?,
            recogniser: load(&rec, [1, 3, REC_HEIGHT, REC_WIDTH])?,
            characters: characters(&rec)?,
        })
    }

    /// Reads every line of text in `image`, top to bottom.
    pub fn read(&self, image: &RgbImage) -> Result<Vec<TextLine>, ModelError> {
        let boxes = self.detect(image)?;
        let mut lines = Vec::new();
        for bbox in boxes {
            let (x, y, w, h) = bbox;
            let crop = image::imageops::crop_imm(image, x, y, w, h).to_image();
            // A tall box is vertical writing (a label written along its long side): read it
            // turned both ways and keep the likelier reading, as the direction classifier would.
            let candidates = if h as f32 >= 1.5 * w as f32 {
                vec![
                    image::imageops::rotate270(&crop),
                    image::imageops::rotate90(&crop),
                ]
            } else {
                vec![crop]
            };
            let mut best: Option<Reading> = None;
            for candidate in &candidates {
                if let Some(reading) = self.recognise(candidate)? {
                    if best
                        .as_ref()
                        .is_none_or(|b| reading.confidence > b.confidence)
                    {
                        best = Some(reading);
                    }
                }
            }
            if let Some(reading) = best {
                lines.push(TextLine {
                    text: reading.text,
                    confidence: reading.confidence,
                    character_confidences: reading.per_character,
                    bbox,
                });
            }
        }
        Ok(lines)
    }

    fn detect(&self, image: &RgbImage) -> Result<Vec<(u32, u32, u32, u32)>, ModelError> {
        let (width, height) = image.dimensions();
        let scale = (DET_WIDTH as f32 / width as f32).min(DET_HEIGHT as f32 / height as f32);
        let (scaled_w, scaled_h) = (
            ((width as f32 * scale) as u32).max(1),
            ((height as f32 * scale) as u32).max(1),
        );
        let resized = image::imageops::resize(
            image,
            scaled_w,
            scaled_h,
            image::imageops::FilterType::Triangle,
        );
        let output = self
            .detector
            .run(tvec!(to_tensor(&resized, DET_HEIGHT, DET_WIDTH)?.into()))
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let map = output[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let map = map
            .as_slice()
            .ok_or_else(|| ModelError::Inference("detection map not contiguous".into()))?;
        let (mw, mh) = (scaled_w as usize, scaled_h as usize);
        let mut seen = vec![false; DET_HEIGHT * DET_WIDTH];
        let mut boxes = Vec::new();
        for start in 0..DET_HEIGHT * DET_WIDTH {
            let (sx, sy) = (start % DET_WIDTH, start / DET_WIDTH);
            if seen[start] || sx >= mw || sy >= mh || map[start] < PIXEL_THRESHOLD {
                continue;
            }
            // Flood-fill one text kernel.
            let (mut x0, mut y0, mut x1, mut y1) = (sx, sy, sx, sy);
            let (mut sum, mut count) = (0f32, 0usize);
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(index) = stack.pop() {
                let (x, y) = (index % DET_WIDTH, index / DET_WIDTH);
                sum += map[index];
                count += 1;
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
                let neighbours = [
                    (x > 0).then(|| index - 1),
                    (x + 1 < mw).then(|| index + 1),
                    (y > 0).then(|| index - DET_WIDTH),
                    (y + 1 < mh).then(|| index + DET_WIDTH),
                ];
                for next in neighbours.into_iter().flatten() {
                    if !seen[next] && map[next] >= PIXEL_THRESHOLD {
                        seen[next] = true;
                        stack.push(next);
                    }
                }
            }
            let (bw, bh) = ((x1 - x0 + 1) as f32, (y1 - y0 + 1) as f32);
            if bh < 3.0 || bw < 3.0 || sum / (count as f32) < BOX_THRESHOLD {
                continue;
            }
            // Grow the kernel back to the text's extent: offset = area * ratio / perimeter.
            let offset = bw * bh * UNCLIP_RATIO / (2.0 * (bw + bh));
            let to_image = |v: f32| (v / scale).max(0.0);
            let left = to_image(x0 as f32 - offset);
            let top = to_image(y0 as f32 - offset);
            let right = to_image(x1 as f32 + 1.0 + offset).min(width as f32);
            let bottom = to_image(y1 as f32 + 1.0 + offset).min(height as f32);
            if right - left >= 2.0 && bottom - top >= 2.0 {
                boxes.push((
                    left as u32,
                    top as u32,
                    (right - left) as u32,
                    (bottom - top) as u32,
                ));
            }
        }
        boxes.sort_by_key(|&(x, y, _, h)| (y + h / 2, x));
        Ok(boxes)
    }

    fn recognise(&self, crop: &RgbImage) -> Result<Option<Reading>, ModelError> {
        let (w, h) = crop.dimensions();
        if w == 0 || h == 0 {
            return Ok(None);
        }
        let target_w =
            ((REC_HEIGHT as f32 * w as f32 / h as f32).ceil() as usize).clamp(1, REC_WIDTH);
        let resized = image::imageops::resize(
            crop,
            target_w as u32,
            REC_HEIGHT as u32,
            image::imageops::FilterType::Triangle,
        );
        let output = self
            .recogniser
            .run(tvec!(to_tensor(&resized, REC_HEIGHT, REC_WIDTH)?.into()))
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let probabilities = output[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| ModelError::Inference(e.to_string()))?;
        let shape = probabilities.shape().to_vec();
        let (steps, classes) = (shape[1], shape[2]);
        let flat = probabilities
            .as_slice()
            .ok_or_else(|| ModelError::Inference("recognition output not contiguous".into()))?;
        let mut decoded: Vec<(char, f32)> = Vec::new();
        let mut previous = 0usize;
        for step in 0..steps {
            let row = &flat[step * classes..(step + 1) * classes];
            let (best, probability) =
                row.iter()
                    .copied()
                    .enumerate()
                    .fold(
                        (0, f32::MIN),
                        |acc, (i, p)| if p > acc.1 { (i, p) } else { acc },
                    );
            if best != 0 && best != previous {
                let character = if best == classes - 1 {
                    " "
                } else {
                    self.characters
                        .get(best - 1)
                        .map(String::as_str)
                        .unwrap_or("")
                };
                for c in character.chars() {
                    decoded.push((c, probability));
                }
            }
            previous = best;
        }
        let start = decoded.iter().position(|(c, _)| !c.is_whitespace());
        let end = decoded.iter().rposition(|(c, _)| !c.is_whitespace());
        let (Some(start), Some(end)) = (start, end) else {
            return Ok(None);
        };
        let decoded = &decoded[start..=end];
        let text: String = decoded.iter().map(|(c, _)| c).collect();
        let per_character: Vec<f32> = decoded.iter().map(|(_, p)| *p).collect();
        let confidence = per_character.iter().sum::<f32>() / per_character.len() as f32;
        Ok(Some(Reading {
            text,
            confidence,
            per_character,
        }))
    }
}

/// The first text matching `pattern` (the site's pathology-number format) in the lines read from
/// a label, with the probability of its *least* certain character: one misread digit that still
/// fits the pattern would point at another patient's case, so the weakest character decides.
/// Spaces inside a line are ignored, as OCR tends to insert them between groups of digits.
pub fn find_pathology_number(lines: &[TextLine], pattern: &regex::Regex) -> Option<(String, f32)> {
    lines.iter().find_map(|line| {
        let compact: Vec<(char, f32)> = line
            .text
            .chars()
            .zip(
                line.character_confidences
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(0.0)),
            )
            .filter(|(c, _)| !c.is_whitespace())
            .collect();
        let text: String = compact.iter().map(|(c, _)| c).collect();
        let found = pattern.find(&text)?;
        let first = text[..found.start()].chars().count();
        let count = found.as_str().chars().count();
        let weakest = compact[first..first + count]
            .iter()
            .map(|(_, p)| *p)
            .fold(f32::INFINITY, f32::min);
        Some((found.as_str().to_string(), weakest))
    })
}
