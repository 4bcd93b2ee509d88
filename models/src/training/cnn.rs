//! The screening CNN in burn: three 3x3 stride-2 convolutions with ReLU, global average pooling,
//! and a linear layer giving one logit per class. Small on purpose: it must screen a whole slide
//! on a 2-core edge in minutes, and the same code trains at the edges in federated rounds.
//! [`ScreeningCnn::weights`] hands the trained values to the ONNX writer ([`crate::onnx_graph`]).

use burn::module::Module;
use burn::nn::conv::{Conv2d, Conv2dConfig};
use burn::nn::pool::{AdaptiveAvgPool2d, AdaptiveAvgPool2dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig2d, Relu};
use burn::prelude::*;

use crate::onnx_graph::{CnnWeights, ConvWeights, KERNEL, PADDING, STRIDE};
use crate::ModelError;

/// Channels after each convolution.
pub const CHANNELS: [usize; 3] = [16, 32, 64];

#[derive(Module, Debug)]
pub struct ScreeningCnn<B: Backend> {
    convs: Vec<Conv2d<B>>,
    pool: AdaptiveAvgPool2d,
    head: Linear<B>,
    relu: Relu,
}

impl<B: Backend> ScreeningCnn<B> {
    pub fn new(classes: usize, device: &B::Device) -> Self {
        let mut convs = Vec::new();
        let mut input = 3;
        for output in CHANNELS {
            convs.push(
                Conv2dConfig::new([input, output], [KERNEL, KERNEL])
                    .with_stride([STRIDE, STRIDE])
                    .with_padding(PaddingConfig2d::Explicit(PADDING, PADDING))
                    .init(device),
            );
            input = output;
        }
        Self {
            convs,
            pool: AdaptiveAvgPool2dConfig::new([1, 1]).init(),
            head: LinearConfig::new(input, classes).init(device),
            relu: Relu::new(),
        }
    }

    /// Logits `[batch, classes]` for normalised tiles `[batch, 3, height, width]`.
    pub fn forward(&self, tiles: Tensor<B, 4>) -> Tensor<B, 2> {
        let mut x = tiles;
        for conv in &self.convs {
            x = self.relu.forward(conv.forward(x));
        }
        let pooled = self.pool.forward(x);
        self.head.forward(pooled.flatten::<2>(1, 3))
    }

    /// The trained values, laid out as ONNX wants them.
    pub fn weights(&self) -> Result<CnnWeights, ModelError> {
        let values = |tensor: TensorData| {
            tensor
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| ModelError::Inference(format!("reading weights: {e:?}")))
        };
        let mut convs = Vec::new();
        for conv in &self.convs {
            let weight = conv.weight.val();
            let [out_channels, in_channels, _, _] = weight.dims();
            let bias = match &conv.bias {
                Some(bias) => values(bias.val().into_data())?,
                None => vec![0.0; out_channels],
            };
            convs.push(ConvWeights {
                in_channels,
                out_channels,
                weight: values(weight.into_data())?,
                bias,
            });
        }
        // burn keeps linear weights as [inputs, outputs]; ONNX Gemm (transB) takes [outputs, inputs].
        let linear = self.head.weight.val();
        let [_, classes] = linear.dims();
        let linear_bias = match &self.head.bias {
            Some(bias) => values(bias.val().into_data())?,
            None => vec![0.0; classes],
        };
        Ok(CnnWeights {
            convs,
            linear_weight: values(linear.transpose().into_data())?,
            linear_bias,
            classes,
        })
    }
}
