//! The screening CNN in burn: 3x3 stride-2 convolutions with ReLU, global average pooling, and
//! a linear layer giving one logit per class. Small on purpose: it must screen a whole slide on
//! a 2-core edge in minutes, and the same code trains at the edges in federated rounds.
//!
//! Two shapes: the quick model (three convolutions, 32 px tiles at 2 um/px: the demo's and the
//! federated rounds' model) and the context model (four convolutions, 64 px tiles at 1 um/px:
//! the shipped screening model, which sees nuclei at twice the detail over the same 64 um
//! field). A model's shape travels in its weights, so a round trains whichever it is given.
//! [`ScreeningCnn::weights`] hands the trained values to the ONNX writer ([`crate::onnx_graph`]).
//!
//! The convolutions are written as im2col and one matrix product each (the nine strided taps of
//! the padded input stacked, times the kernel as a matrix) rather than with burn's `Conv2d`:
//! burn-ndarray 0.20 computes the input gradient of a convolution with a naive loop that made
//! an epoch take minutes; slices, reshapes and matrix products backpropagate fast. The
//! parameters keep `Conv2d`'s layout and initialisation, the ONNX graph is a plain `Conv`, and
//! the training tests check that tract and burn agree on the outputs.

use burn::module::{Module, Param};
use burn::nn::{Initializer, Linear, LinearConfig, Relu};
use burn::prelude::*;
use burn::tensor::ops::PadMode;

use crate::onnx_graph::{CnnWeights, ConvWeights, KERNEL, PADDING, STRIDE};
use crate::ModelError;

/// Most convolutions a model's weights may have (a package's weights are checked against it).
pub const MAX_CONVOLUTIONS: usize = 6;
/// Most channels of one convolution.
pub const MAX_CHANNELS: usize = 512;

/// Channels after each convolution of the quick model (32 px tiles at 2 um/px).
pub const QUICK_CHANNELS: [usize; 3] = [16, 32, 64];
/// Channels after each convolution of the context model (64 px tiles at 1 um/px): one more
/// stride-2 convolution and narrower early layers, so a tile of four times the pixels costs
/// about 1.6 times the quick model's multiply-adds (270 per input pixel against 684).
pub const CONTEXT_CHANNELS: [usize; 4] = [8, 16, 32, 64];

#[derive(Module, Debug)]
pub struct ScreeningCnn<B: Backend> {
    /// Per convolution: kernels `[out, in, 3, 3]` and biases `[out]`.
    kernels: Vec<Param<Tensor<B, 4>>>,
    biases: Vec<Param<Tensor<B, 1>>>,
    head: Linear<B>,
    relu: Relu,
}

/// A 3x3, stride-2, padding-1 convolution of `x` `[batch, in, h, w]` (h and w even).
fn conv3x3_stride2<B: Backend>(
    x: Tensor<B, 4>,
    kernel: Tensor<B, 4>,
    bias: Tensor<B, 1>,
) -> Tensor<B, 4> {
    let [batch, channels, height, width] = x.dims();
    let [out_channels, ..] = kernel.dims();
    let (out_h, out_w) = (height / 2, width / 2);
    // Padded rows and columns split by parity: padded index 2i + k is (i + k / 2, k % 2).
    let padded = x
        .pad((PADDING, PADDING, PADDING, PADDING), PadMode::Constant(0.0))
        .reshape([batch, channels, out_h + 1, 2, out_w + 1, 2]);
    let mut taps = Vec::with_capacity(KERNEL * KERNEL);
    for kh in 0..KERNEL {
        for kw in 0..KERNEL {
            taps.push(
                padded
                    .clone()
                    .slice([
                        0..batch,
                        0..channels,
                        kh / 2..kh / 2 + out_h,
                        kh % 2..kh % 2 + 1,
                        kw / 2..kw / 2 + out_w,
                        kw % 2..kw % 2 + 1,
                    ])
                    .reshape([batch, channels, out_h * out_w]),
            );
        }
    }
    // [batch, in, 9, pixels] -> rows of (in, kh, kw), as the kernel flattens.
    let columns = Tensor::stack::<4>(taps, 2)
        .reshape([batch, channels * KERNEL * KERNEL, out_h * out_w])
        .swap_dims(1, 2)
        .reshape([batch * out_h * out_w, channels * KERNEL * KERNEL]);
    let weights = kernel
        .reshape([out_channels, channels * KERNEL * KERNEL])
        .transpose();
    (columns.matmul(weights) + bias.unsqueeze::<2>())
        .reshape([batch, out_h * out_w, out_channels])
        .swap_dims(1, 2)
        .reshape([batch, out_channels, out_h, out_w])
}

impl<B: Backend> ScreeningCnn<B> {
    /// A fresh model with convolutions of `channels` outputs each.
    pub fn new(classes: usize, channels: &[usize], device: &B::Device) -> Self {
        // Conv2d's default: Kaiming-uniform with gain 1/sqrt(3) over the fan-in.
        let init = Initializer::KaimingUniform {
            gain: 1.0 / 3.0f64.sqrt(),
            fan_out_only: false,
        };
        let (mut kernels, mut biases) = (Vec::new(), Vec::new());
        let mut input = 3;
        for &output in channels {
            let fan_in = input * KERNEL * KERNEL;
            let fan_out = output * KERNEL * KERNEL;
            kernels.push(init.init_with(
                [output, input, KERNEL, KERNEL],
                Some(fan_in),
                Some(fan_out),
                device,
            ));
            biases.push(init.init_with([output], Some(fan_in), Some(fan_out), device));
            input = output;
        }
        Self {
            kernels,
            biases,
            head: LinearConfig::new(input, classes).init(device),
            relu: Relu::new(),
        }
    }

    /// Logits `[batch, classes]` for normalised tiles `[batch, 3, height, width]`.
    pub fn forward(&self, tiles: Tensor<B, 4>) -> Tensor<B, 2> {
        debug_assert_eq!(STRIDE, 2);
        let mut x = tiles;
        for (kernel, bias) in self.kernels.iter().zip(&self.biases) {
            x = self
                .relu
                .forward(conv3x3_stride2(x, kernel.val(), bias.val()));
        }
        let [batch, channels, _, _] = x.dims();
        let pooled = x.mean_dim(3).mean_dim(2).reshape([batch, channels]);
        self.head.forward(pooled)
    }

    /// A model holding `weights` (as [`Self::weights`] gives them): how an edge starts a round
    /// from the global model, and how the hub evaluates an aggregate.
    pub fn from_weights(weights: &CnnWeights, device: &B::Device) -> Result<Self, ModelError> {
        let mismatch = |what: String| ModelError::BadPackage(format!("weights: {what}"));
        // The screening CNN's shapes, generously: anything else is not this model.
        if !(1..=MAX_CONVOLUTIONS).contains(&weights.convs.len()) {
            return Err(mismatch(format!(
                "{} convolutions (the screening CNN has 1 to {MAX_CONVOLUTIONS})",
                weights.convs.len()
            )));
        }
        let (mut kernels, mut biases) = (Vec::new(), Vec::new());
        let mut input = 3;
        for conv in &weights.convs {
            // Each convolution takes what the one before gives.
            let output = conv.out_channels;
            if !(1..=MAX_CHANNELS).contains(&output)
                || conv.in_channels != input
                || conv.weight.len() != output * input * KERNEL * KERNEL
                || conv.bias.len() != output
            {
                return Err(mismatch(format!(
                    "a convolution of {} -> {} channels ({} values) after one giving {input} (at most {MAX_CHANNELS})",
                    conv.in_channels,
                    conv.out_channels,
                    conv.weight.len()
                )));
            }
            kernels.push(Param::from_tensor(
                Tensor::<B, 1>::from_floats(conv.weight.as_slice(), device)
                    .reshape([output, input, KERNEL, KERNEL]),
            ));
            biases.push(Param::from_tensor(Tensor::<B, 1>::from_floats(
                conv.bias.as_slice(),
                device,
            )));
            input = output;
        }
        let classes = weights.classes;
        if weights.linear_weight.len() != classes * input || weights.linear_bias.len() != classes {
            return Err(mismatch(format!(
                "a linear layer that is not {input} -> {classes}"
            )));
        }
        // ONNX's [classes, features] back to burn's [features, classes].
        let linear = Tensor::<B, 1>::from_floats(weights.linear_weight.as_slice(), device)
            .reshape([classes, input])
            .transpose();
        let head = Linear {
            weight: Param::from_tensor(linear),
            bias: Some(Param::from_tensor(Tensor::<B, 1>::from_floats(
                weights.linear_bias.as_slice(),
                device,
            ))),
        };
        Ok(Self {
            kernels,
            biases,
            head,
            relu: Relu::new(),
        })
    }

    /// That the model can take `tile` x `tile` tiles: each convolution halves an even size.
    pub fn check_tile(&self, tile: u32) -> Result<(), ModelError> {
        let halvings = 1u32 << self.kernels.len();
        match tile >= halvings && tile.is_multiple_of(halvings) {
            true => Ok(()),
            false => Err(ModelError::BadParameters(format!(
                "{tile} px tiles do not halve evenly through {} convolutions",
                self.kernels.len()
            ))),
        }
    }

    /// FedProx's proximal term, `||w - w_global||^2` summed over every parameter, with the
    /// global model's values held constant.
    pub fn squared_distance(&self, global: &Self) -> Tensor<B, 1> {
        let mut total = (self.head.weight.val() - global.head.weight.val().detach())
            .powf_scalar(2.0)
            .sum();
        if let (Some(bias), Some(global_bias)) = (&self.head.bias, &global.head.bias) {
            total = total
                + (bias.val() - global_bias.val().detach())
                    .powf_scalar(2.0)
                    .sum();
        }
        for (kernel, global_kernel) in self.kernels.iter().zip(&global.kernels) {
            total = total
                + (kernel.val() - global_kernel.val().detach())
                    .powf_scalar(2.0)
                    .sum();
        }
        for (bias, global_bias) in self.biases.iter().zip(&global.biases) {
            total = total
                + (bias.val() - global_bias.val().detach())
                    .powf_scalar(2.0)
                    .sum();
        }
        total
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
        for (kernel, bias) in self.kernels.iter().zip(&self.biases) {
            let weight = kernel.val();
            let [out_channels, in_channels, _, _] = weight.dims();
            convs.push(ConvWeights {
                in_channels,
                out_channels,
                weight: values(weight.into_data())?,
                bias: values(bias.val().into_data())?,
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

#[cfg(test)]
mod tests {
    use burn::backend::NdArray;

    use super::*;

    #[test]
    fn a_shape_is_read_from_the_weights_and_bounded() {
        let device = Default::default();
        let context = ScreeningCnn::<NdArray>::new(6, &CONTEXT_CHANNELS, &device);
        let weights = context.weights().unwrap();
        let rebuilt = ScreeningCnn::<NdArray>::from_weights(&weights, &device).unwrap();
        assert_eq!(rebuilt.weights().unwrap().convs.len(), 4);
        // Four halvings: 64 px tiles go through, 40 px ones would break a reshape.
        assert!(rebuilt.check_tile(64).is_ok());
        assert!(rebuilt.check_tile(40).is_err());
        assert!(rebuilt.check_tile(8).is_err());
        // More convolutions than the screening CNN has, or a chain that does not fit.
        let mut deep = weights.clone();
        while deep.convs.len() <= MAX_CONVOLUTIONS {
            deep.convs.push(weights.convs[3].clone());
        }
        assert!(ScreeningCnn::<NdArray>::from_weights(&deep, &device).is_err());
        let mut broken = weights.clone();
        broken.convs.swap(1, 2);
        let error = ScreeningCnn::<NdArray>::from_weights(&broken, &device).expect_err("refused");
        assert!(error.to_string().contains("after one giving 8"), "{error}");
    }
}
