//! The screening CNN written as an ONNX graph, so that tract runs what burn trained.
//!
//! burn imports ONNX but cannot export it, so the graph is written here from the trained
//! weights with the ONNX protobuf types tract itself parses (`tract_onnx::pb`, encoded with
//! prost). The architecture is small and fixed — 3x3 stride-2 convolutions with ReLU, global
//! average pooling, one linear layer giving logits — so the writer covers exactly those layers;
//! a round-trip test ([`crate::training`]) checks burn and tract give the same outputs.

use prost::Message;
use tract_onnx::pb;

/// One 3x3 convolution (stride 2, padding 1) followed by ReLU: weights `[out][in][3][3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvWeights {
    pub in_channels: usize,
    pub out_channels: usize,
    pub weight: Vec<f32>,
    pub bias: Vec<f32>,
}

/// The whole network: convolutions, then global average pooling and a linear layer
/// (`weight` is `[classes][features]`, as ONNX Gemm with `transB = 1` takes it).
#[derive(Debug, Clone, PartialEq)]
pub struct CnnWeights {
    pub convs: Vec<ConvWeights>,
    pub linear_weight: Vec<f32>,
    pub linear_bias: Vec<f32>,
    pub classes: usize,
}

/// Kernel, stride and padding of every convolution.
pub const KERNEL: usize = 3;
pub const STRIDE: usize = 2;
pub const PADDING: usize = 1;

/// Name of the graph's input (`[batch, 3, height, width]`) and output (`[batch, classes]`).
pub const INPUT: &str = "tiles";
pub const OUTPUT: &str = "logits";

fn tensor(name: &str, dims: &[usize], data: &[f32]) -> pb::TensorProto {
    pb::TensorProto {
        name: name.to_string(),
        dims: dims.iter().map(|d| *d as i64).collect(),
        data_type: pb::tensor_proto::DataType::Float as i32,
        raw_data: data.iter().flat_map(|v| v.to_le_bytes()).collect(),
        ..Default::default()
    }
}

fn ints(name: &str, values: &[i64]) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Ints as i32,
        ints: values.to_vec(),
        ..Default::default()
    }
}

fn int(name: &str, value: i64) -> pb::AttributeProto {
    pb::AttributeProto {
        name: name.to_string(),
        r#type: pb::attribute_proto::AttributeType::Int as i32,
        i: value,
        ..Default::default()
    }
}

fn node(
    op: &str,
    inputs: &[&str],
    output: &str,
    attributes: Vec<pb::AttributeProto>,
) -> pb::NodeProto {
    pb::NodeProto {
        op_type: op.to_string(),
        name: output.to_string(),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        attribute: attributes,
        ..Default::default()
    }
}

fn value_info(name: &str, dims: &[Option<usize>]) -> pb::ValueInfoProto {
    use pb::tensor_shape_proto::{dimension::Value, Dimension};
    let dim = dims
        .iter()
        .map(|d| Dimension {
            value: Some(match d {
                Some(size) => Value::DimValue(*size as i64),
                None => Value::DimParam("batch".into()),
            }),
            ..Default::default()
        })
        .collect();
    pb::ValueInfoProto {
        name: name.to_string(),
        r#type: Some(pb::TypeProto {
            value: Some(pb::type_proto::Value::TensorType(pb::type_proto::Tensor {
                elem_type: pb::tensor_proto::DataType::Float as i32,
                shape: Some(pb::TensorShapeProto { dim }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The ONNX model bytes for `weights` taking `height` x `width` RGB tiles, any batch size.
/// `metadata` is stored in the model (class names, provenance) for people who open the file.
pub fn cnn_to_onnx(
    weights: &CnnWeights,
    height: usize,
    width: usize,
    metadata: &[(&str, &str)],
) -> Vec<u8> {
    let mut nodes = Vec::new();
    let mut initializers = Vec::new();
    let mut previous = INPUT.to_string();
    for (index, conv) in weights.convs.iter().enumerate() {
        let (w, b) = (format!("conv{index}.weight"), format!("conv{index}.bias"));
        initializers.push(tensor(
            &w,
            &[conv.out_channels, conv.in_channels, KERNEL, KERNEL],
            &conv.weight,
        ));
        initializers.push(tensor(&b, &[conv.out_channels], &conv.bias));
        let convolved = format!("conv{index}");
        let k = KERNEL as i64;
        let (s, p) = (STRIDE as i64, PADDING as i64);
        nodes.push(node(
            "Conv",
            &[&previous, &w, &b],
            &convolved,
            vec![
                ints("kernel_shape", &[k, k]),
                ints("strides", &[s, s]),
                ints("pads", &[p, p, p, p]),
            ],
        ));
        let activated = format!("relu{index}");
        nodes.push(node("Relu", &[&convolved], &activated, vec![]));
        previous = activated;
    }
    nodes.push(node("GlobalAveragePool", &[&previous], "pooled", vec![]));
    nodes.push(node(
        "Flatten",
        &["pooled"],
        "features",
        vec![int("axis", 1)],
    ));
    let features = weights.convs.last().map_or(3, |c| c.out_channels);
    initializers.push(tensor(
        "linear.weight",
        &[weights.classes, features],
        &weights.linear_weight,
    ));
    initializers.push(tensor(
        "linear.bias",
        &[weights.classes],
        &weights.linear_bias,
    ));
    nodes.push(node(
        "Gemm",
        &["features", "linear.weight", "linear.bias"],
        OUTPUT,
        vec![int("transB", 1)],
    ));
    let model = pb::ModelProto {
        ir_version: 8,
        producer_name: "grassroots".into(),
        producer_version: env!("CARGO_PKG_VERSION").into(),
        opset_import: vec![pb::OperatorSetIdProto {
            domain: String::new(),
            version: 13,
        }],
        metadata_props: metadata
            .iter()
            .map(|(key, value)| pb::StringStringEntryProto {
                key: key.to_string(),
                value: value.to_string(),
            })
            .collect(),
        graph: Some(pb::GraphProto {
            name: "grassroots-screening-cnn".into(),
            node: nodes,
            initializer: initializers,
            input: vec![value_info(
                INPUT,
                &[None, Some(3), Some(height), Some(width)],
            )],
            output: vec![value_info(OUTPUT, &[None, Some(weights.classes)])],
            ..Default::default()
        }),
        ..Default::default()
    };
    model.encode_to_vec()
}
