//! Building ONNX graphs: the generated protobuf types and a small builder over them.

use prost::Message;

/// The ONNX protobuf types, generated at build time from the vendored `onnx.proto`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/onnx.rs"));
}

use proto::{
    AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, StringStringEntryProto,
    TensorProto, TensorShapeProto, TypeProto, ValueInfoProto, attribute_proto, tensor_proto,
    tensor_shape_proto, type_proto,
};

/// ONNX element types used here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    /// float32
    F32,
    /// float16
    F16,
    /// bfloat16
    BF16,
    /// int64
    I64,
    /// bool
    Bool,
}

impl ElementType {
    /// The ONNX `TensorProto.DataType` code (what `Cast`'s `to` takes).
    pub fn code(self) -> i32 {
        let kind = match self {
            ElementType::F32 => tensor_proto::DataType::Float,
            ElementType::F16 => tensor_proto::DataType::Float16,
            ElementType::BF16 => tensor_proto::DataType::Bfloat16,
            ElementType::I64 => tensor_proto::DataType::Int64,
            ElementType::Bool => tensor_proto::DataType::Bool,
        };
        kind as i32
    }
}

/// A dimension of a graph input or output.
#[derive(Debug, Clone)]
pub enum Dim {
    /// Fixed size.
    Fixed(i64),
    /// Named symbolic size.
    Named(&'static str),
}

/// An attribute value.
#[derive(Debug, Clone)]
pub enum Attr {
    /// One integer.
    Int(i64),
    /// Integers.
    Ints(Vec<i64>),
    /// One float.
    Float(f32),
    /// A one-element float tensor (`ConstantOfShape`'s `value`).
    FloatTensor(f32),
    /// A string.
    String(&'static str),
}

/// Accumulates nodes, initializers, inputs and outputs.
#[derive(Debug, Default)]
pub struct GraphBuilder {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    next_id: usize,
}

fn value_info(name: &str, element: ElementType, dims: &[Dim]) -> ValueInfoProto {
    let dims = dims
        .iter()
        .map(|dim| tensor_shape_proto::Dimension {
            value: Some(match dim {
                Dim::Fixed(size) => tensor_shape_proto::dimension::Value::DimValue(*size),
                Dim::Named(name) => tensor_shape_proto::dimension::Value::DimParam((*name).into()),
            }),
            denotation: None,
        })
        .collect();
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(element.code()),
                shape: Some(TensorShapeProto { dim: dims }),
            })),
            denotation: None,
        }),
        ..ValueInfoProto::default()
    }
}

fn attribute(name: &str, value: &Attr) -> AttributeProto {
    let mut attribute = AttributeProto {
        name: Some(name.into()),
        ..AttributeProto::default()
    };
    match value {
        Attr::Int(v) => {
            attribute.i = Some(*v);
            attribute.r#type = Some(attribute_proto::AttributeType::Int as i32);
        }
        Attr::Ints(v) => {
            attribute.ints.clone_from(v);
            attribute.r#type = Some(attribute_proto::AttributeType::Ints as i32);
        }
        Attr::Float(v) => {
            attribute.f = Some(*v);
            attribute.r#type = Some(attribute_proto::AttributeType::Float as i32);
        }
        Attr::FloatTensor(v) => {
            attribute.t = Some(TensorProto {
                dims: vec![1],
                data_type: Some(ElementType::F32.code()),
                float_data: vec![*v],
                ..TensorProto::default()
            });
            attribute.r#type = Some(attribute_proto::AttributeType::Tensor as i32);
        }
        Attr::String(v) => {
            attribute.s = Some(v.as_bytes().to_vec());
            attribute.r#type = Some(attribute_proto::AttributeType::String as i32);
        }
    }
    attribute
}

impl GraphBuilder {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A fresh value name starting with `hint`.
    pub fn fresh(&mut self, hint: &str) -> String {
        self.next_id += 1;
        format!("{hint}_{}", self.next_id)
    }

    /// Declares a graph input.
    pub fn input(&mut self, name: &str, element: ElementType, dims: &[Dim]) -> String {
        self.inputs.push(value_info(name, element, dims));
        name.into()
    }

    /// Declares a graph output, produced by an `Identity` of `value`.
    pub fn output(&mut self, name: &str, value: &str, element: ElementType, dims: &[Dim]) {
        self.push(NodeProto {
            input: vec![value.into()],
            output: vec![name.into()],
            op_type: Some("Identity".into()),
            name: Some(format!("output_{name}")),
            ..NodeProto::default()
        });
        self.outputs.push(value_info(name, element, dims));
    }

    fn push(&mut self, node: NodeProto) {
        self.nodes.push(node);
    }

    /// Adds a node of the default domain with one output, returning the output's name.
    pub fn op(&mut self, op_type: &str, inputs: &[&str], attrs: &[(&str, Attr)]) -> String {
        self.op_in("", op_type, inputs, attrs, 1).remove(0)
    }

    /// Adds a node of `domain` with `outputs` outputs.
    pub fn op_in(
        &mut self,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        outputs: usize,
    ) -> Vec<String> {
        self.op_with_outputs(domain, op_type, inputs, attrs, &vec![true; outputs])
    }

    /// Adds a node of `domain` whose outputs are named where `used` says so and left empty
    /// (ONNX's "not produced" for optional outputs) elsewhere.
    pub fn op_with_outputs(
        &mut self,
        domain: &str,
        op_type: &str,
        inputs: &[&str],
        attrs: &[(&str, Attr)],
        used: &[bool],
    ) -> Vec<String> {
        let names: Vec<String> = used
            .iter()
            .map(|&used| {
                if used {
                    self.fresh(op_type)
                } else {
                    String::new()
                }
            })
            .collect();
        self.push(NodeProto {
            input: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: names.clone(),
            op_type: Some(op_type.into()),
            domain: Some(domain.into()),
            name: Some(format!(
                "{}_node",
                names
                    .iter()
                    .find(|n| !n.is_empty())
                    .map_or("node", String::as_str)
            )),
            attribute: attrs
                .iter()
                .map(|(name, value)| attribute(name, value))
                .collect(),
            ..NodeProto::default()
        });
        names
    }

    /// An embedded int64 constant.
    pub fn const_i64(&mut self, values: &[i64], dims: &[i64]) -> String {
        let name = self.fresh("const_i64");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(ElementType::I64.code()),
            int64_data: values.to_vec(),
            ..TensorProto::default()
        });
        name
    }

    /// An embedded float32 constant (stored as raw little-endian bytes).
    pub fn const_f32(&mut self, values: &[f32], dims: &[i64]) -> String {
        let name = self.fresh("const_f32");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(ElementType::F32.code()),
            raw_data: Some(values.iter().flat_map(|v| v.to_le_bytes()).collect()),
            ..TensorProto::default()
        });
        name
    }

    /// An embedded floating-point constant of `element` (f32, f16 or bf16), from float32
    /// values rounded to nearest, ties to even, as torch's `.to(dtype)` rounds.
    pub fn const_float(&mut self, values: &[f32], dims: &[i64], element: ElementType) -> String {
        let raw: Vec<u8> = match element {
            ElementType::F16 => values
                .iter()
                .flat_map(|v| half::f16::from_f32(*v).to_le_bytes())
                .collect(),
            ElementType::BF16 => values
                .iter()
                .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
                .collect(),
            _ => return self.const_f32(values, dims),
        };
        let name = self.fresh("const_float");
        self.initializers.push(TensorProto {
            name: Some(name.clone()),
            dims: dims.to_vec(),
            data_type: Some(element.code()),
            raw_data: Some(raw),
            ..TensorProto::default()
        });
        name
    }

    /// An initializer whose bytes stay in `location` (a file name relative to the model's
    /// directory) at `offset`: nothing is copied.
    pub fn external(
        &mut self,
        name: &str,
        element: ElementType,
        dims: &[i64],
        location: &str,
        offset: u64,
        length: u64,
    ) -> String {
        let entry = |key: &str, value: String| StringStringEntryProto {
            key: Some(key.into()),
            value: Some(value),
        };
        self.initializers.push(TensorProto {
            name: Some(name.into()),
            dims: dims.to_vec(),
            data_type: Some(element.code()),
            data_location: Some(tensor_proto::DataLocation::External as i32),
            external_data: vec![
                entry("location", location.into()),
                entry("offset", offset.to_string()),
                entry("length", length.to_string()),
            ],
            ..TensorProto::default()
        });
        name.into()
    }

    /// Serialises the model (IR version 10, opset 21 plus ORT's `com.microsoft` domain).
    pub fn finish(self, graph_name: &str) -> Vec<u8> {
        let model = ModelProto {
            ir_version: Some(10),
            producer_name: Some("validator".into()),
            producer_version: Some(env!("CARGO_PKG_VERSION").into()),
            opset_import: vec![
                OperatorSetIdProto {
                    domain: Some(String::new()),
                    version: Some(21),
                },
                OperatorSetIdProto {
                    domain: Some("com.microsoft".into()),
                    version: Some(1),
                },
            ],
            graph: Some(GraphProto {
                node: self.nodes,
                name: Some(graph_name.into()),
                initializer: self.initializers,
                input: self.inputs,
                output: self.outputs,
                ..GraphProto::default()
            }),
            ..ModelProto::default()
        };
        model.encode_to_vec()
    }
}
