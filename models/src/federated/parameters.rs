//! A model's trainable values as one flat vector with its layout: the unit that federated
//! learning averages, clips, masks, compresses and ships.
//!
//! Aggregation works coordinate by coordinate, so it needs every site's values in the same order;
//! the layout (tensor names and shapes, in the ONNX writer's order) travels with them and is
//! compared before any arithmetic, so that an update for another architecture is refused rather
//! than averaged into nonsense. The values are read back out of a package's ONNX graph
//! ([`Parameters::from_onnx`]), so a signed package is all an edge needs to start a round.

use prost::Message;
use serde::{Deserialize, Serialize};
use tract_onnx::pb;

use crate::onnx_graph::{CnnWeights, ConvWeights, KERNEL};
use crate::ModelError;

/// Most values a parameter set may hold (the screening CNN has about 24,000): a bound on what a
/// peer can make the hub allocate.
pub const MAX_PARAMETERS: usize = 16 << 20;

/// One tensor of the model: its name in the ONNX graph and its shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorLayout {
    pub name: String,
    pub dims: Vec<usize>,
}

impl TensorLayout {
    fn len(&self) -> usize {
        self.dims.iter().product()
    }
}

/// A model's values, flat, in `layout` order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameters {
    pub layout: Vec<TensorLayout>,
    pub values: Vec<f32>,
}

fn bad(reason: impl Into<String>) -> ModelError {
    ModelError::BadParameters(reason.into())
}

impl Parameters {
    /// The values of a screening CNN.
    pub fn from_cnn(weights: &CnnWeights) -> Self {
        let mut layout = Vec::new();
        let mut values = Vec::new();
        for (index, conv) in weights.convs.iter().enumerate() {
            layout.push(TensorLayout {
                name: format!("conv{index}.weight"),
                dims: vec![conv.out_channels, conv.in_channels, KERNEL, KERNEL],
            });
            values.extend_from_slice(&conv.weight);
            layout.push(TensorLayout {
                name: format!("conv{index}.bias"),
                dims: vec![conv.out_channels],
            });
            values.extend_from_slice(&conv.bias);
        }
        let features = weights.convs.last().map_or(3, |c| c.out_channels);
        layout.push(TensorLayout {
            name: "linear.weight".into(),
            dims: vec![weights.classes, features],
        });
        values.extend_from_slice(&weights.linear_weight);
        layout.push(TensorLayout {
            name: "linear.bias".into(),
            dims: vec![weights.classes],
        });
        values.extend_from_slice(&weights.linear_bias);
        Self { layout, values }
    }

    /// Back to the CNN's weights; a layout that is not the screening CNN's is an error.
    pub fn to_cnn(&self) -> Result<CnnWeights, ModelError> {
        self.check()?;
        let mut at = 0;
        let mut take = |layout: &TensorLayout| {
            let slice = self.values[at..at + layout.len()].to_vec();
            at += layout.len();
            slice
        };
        let mut convs = Vec::new();
        let mut tensors = self.layout.iter().peekable();
        while let Some(weight) =
            tensors.next_if(|t| t.name.ends_with(".weight") && t.dims.len() == 4)
        {
            let bias = tensors
                .next()
                .filter(|b| b.dims == [weight.dims[0]])
                .ok_or_else(|| bad(format!("{} has no bias after it", weight.name)))?;
            convs.push(ConvWeights {
                in_channels: weight.dims[1],
                out_channels: weight.dims[0],
                weight: take(weight),
                bias: take(bias),
            });
        }
        let (Some(linear), Some(linear_bias), None) =
            (tensors.next(), tensors.next(), tensors.next())
        else {
            return Err(bad("the layout does not end with one linear layer"));
        };
        if linear.dims.len() != 2 || linear_bias.dims != [linear.dims[0]] {
            return Err(bad("the linear layer's shapes do not fit together"));
        }
        Ok(CnnWeights {
            convs,
            classes: linear.dims[0],
            linear_weight: take(linear),
            linear_bias: take(linear_bias),
        })
    }

    /// The values of the screening CNN in a package's ONNX graph (as [`crate::onnx_graph`]
    /// writes it): its float initializers, in the writer's order.
    pub fn from_onnx(graph: &[u8]) -> Result<Self, ModelError> {
        let model = pb::ModelProto::decode(graph).map_err(|e| bad(format!("not ONNX: {e}")))?;
        let graph = model
            .graph
            .ok_or_else(|| bad("the ONNX file has no graph"))?;
        let find = |name: &str| graph.initializer.iter().find(|t| t.name == name);
        let mut names = Vec::new();
        for index in 0.. {
            let weight = format!("conv{index}.weight");
            if find(&weight).is_none() {
                break;
            }
            names.push(weight);
            names.push(format!("conv{index}.bias"));
        }
        names.push("linear.weight".into());
        names.push("linear.bias".into());
        let mut layout = Vec::new();
        let mut values = Vec::new();
        for name in names {
            let tensor = find(&name).ok_or_else(|| bad(format!("no initializer {name}")))?;
            if tensor.data_type != pb::tensor_proto::DataType::Float as i32 {
                return Err(bad(format!("{name} is not float")));
            }
            let dims = tensor
                .dims
                .iter()
                .map(|d| {
                    usize::try_from(*d).map_err(|_| bad(format!("{name} has a negative dimension")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let count = dims
                .iter()
                .try_fold(1usize, |n, d| n.checked_mul(*d))
                .filter(|n| values.len() + n <= MAX_PARAMETERS)
                .ok_or_else(|| bad(format!("{name} is too large")))?;
            let data: Vec<f32> = if !tensor.raw_data.is_empty() {
                tensor
                    .raw_data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            } else {
                tensor.float_data.clone()
            };
            if data.len() != count {
                return Err(bad(format!(
                    "{name} holds {} values for a shape of {count}",
                    data.len()
                )));
            }
            values.extend_from_slice(&data);
            layout.push(TensorLayout { name, dims });
        }
        let parameters = Self { layout, values };
        parameters.check()?;
        Ok(parameters)
    }

    /// That the values fill the layout exactly, within [`MAX_PARAMETERS`], all finite.
    pub fn check(&self) -> Result<(), ModelError> {
        let expected = self
            .layout
            .iter()
            .try_fold(0usize, |n, t| n.checked_add(t.len()))
            .filter(|n| *n <= MAX_PARAMETERS)
            .ok_or_else(|| bad("the layout is too large"))?;
        if expected != self.values.len() {
            return Err(bad(format!(
                "{} values for a layout of {expected}",
                self.values.len()
            )));
        }
        if self.values.iter().any(|v| !v.is_finite()) {
            return Err(bad("non-finite values"));
        }
        Ok(())
    }

    /// BLAKE3 of the layout and the values: names a version's weights in round records.
    pub fn digest(&self) -> String {
        let mut hasher = blake3::Hasher::new();
        for tensor in &self.layout {
            hasher.update(tensor.name.as_bytes());
            hasher.update(&[0]);
            for d in &tensor.dims {
                hasher.update(&(*d as u64).to_le_bytes());
            }
        }
        for v in &self.values {
            hasher.update(&v.to_le_bytes());
        }
        hasher.finalize().to_hex().to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::training::cnn::ScreeningCnn;
    use burn::backend::NdArray;

    #[test]
    fn a_cnn_survives_the_flat_vector_and_the_onnx_graph() {
        let model = ScreeningCnn::<NdArray>::new(
            6,
            &crate::training::cnn::QUICK_CHANNELS,
            &Default::default(),
        );
        let weights = model.weights().unwrap();
        let flat = Parameters::from_cnn(&weights);
        assert_eq!(flat.to_cnn().unwrap(), weights);
        let onnx = crate::onnx_graph::cnn_to_onnx(&weights, 32, 32, &[]);
        assert_eq!(Parameters::from_onnx(&onnx).unwrap(), flat);
        // And into burn again: the same values come out.
        let rebuilt = ScreeningCnn::<NdArray>::from_weights(&weights, &Default::default()).unwrap();
        assert_eq!(rebuilt.weights().unwrap(), weights);
    }

    #[test]
    fn a_mis_shaped_or_non_finite_parameter_set_is_refused() {
        let model = ScreeningCnn::<NdArray>::new(
            6,
            &crate::training::cnn::QUICK_CHANNELS,
            &Default::default(),
        );
        let mut flat = Parameters::from_cnn(&model.weights().unwrap());
        flat.values.pop();
        assert!(flat
            .check()
            .unwrap_err()
            .to_string()
            .contains("values for a layout"));
        flat.values.push(f32::NAN);
        assert!(flat.check().unwrap_err().to_string().contains("non-finite"));
        assert!(Parameters::from_onnx(b"not a graph").is_err());
    }
}
