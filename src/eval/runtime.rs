//! ONNX Runtime, loaded at run time (`ort` with `load-dynamic`): one session per model,
//! reused for every sample, on the CPU or CUDA provider.

use std::path::PathBuf;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::session::builder::GraphOptimizationLevel;
use ort::value::Tensor;

use super::widen::{Widened, widen};
use super::{EvalError, ModelDir};

/// Where the model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    /// ONNX Runtime's CPU provider.
    Cpu,
    /// The CUDA provider on a GPU.
    Cuda {
        /// CUDA device index.
        device_id: i32,
    },
}

impl std::str::FromStr for Device {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        match text {
            "cpu" => Ok(Device::Cpu),
            "cuda" => Ok(Device::Cuda { device_id: 0 }),
            other => match other.strip_prefix("cuda:").map(str::parse) {
                Some(Ok(device_id)) => Ok(Device::Cuda { device_id }),
                _ => Err(format!("unknown device {other:?}: use cpu, cuda or cuda:N")),
            },
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda { device_id } => write!(f, "cuda:{device_id}"),
        }
    }
}

/// Opens `device` without any model: loads ONNX Runtime and, for CUDA, builds a one-node
/// session on the CUDA provider. An error here is the machine's, never a model's.
pub fn probe(device: Device) -> Result<(), EvalError> {
    let environment = environment()?;
    let Device::Cuda { device_id } = device else {
        return Ok(());
    };
    let mut graph = super::onnx::GraphBuilder::new();
    let x = graph.input(
        "x",
        super::onnx::ElementType::F32,
        &[super::onnx::Dim::Fixed(1)],
    );
    graph.output(
        "y",
        &x,
        super::onnx::ElementType::F32,
        &[super::onnx::Dim::Fixed(1)],
    );
    let bytes = graph.finish("probe");
    let cuda = ort::ep::CUDA::default()
        .with_device_id(device_id)
        .build()
        .error_on_failure();
    Session::builder(&environment)
        .map_err(runtime_error("opening the device"))?
        .with_execution_providers([cuda])
        .map_err(|e| cuda_help(&e.into()))?
        .commit_from_memory(&bytes)
        .map_err(|e| cuda_help(&e))?;
    Ok(())
}

/// The ONNX Runtime library this process loads: `ORT_DYLIB_PATH`, else the one the build
/// fetched.
pub fn library_path() -> Result<PathBuf, EvalError> {
    let from_env = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty());
    let path = from_env
        .map(PathBuf::from)
        .or_else(|| {
            Some(PathBuf::from(env!("VALIDATOR_ORT_DYLIB"))).filter(|p| !p.as_os_str().is_empty())
        })
        .ok_or_else(|| {
            EvalError::Runtime(
                "no ONNX Runtime library: the build could not fetch one; set ORT_DYLIB_PATH to \
                 libonnxruntime.so.1.31.1 (from the onnxruntime==1.31.1 wheel)"
                    .into(),
            )
        })?;
    if !path.is_file() {
        return Err(EvalError::Runtime(format!(
            "the ONNX Runtime library {} does not exist; set ORT_DYLIB_PATH to libonnxruntime.so.1.31.1",
            path.display()
        )));
    }
    Ok(path)
}

/// The process's ONNX Runtime environment, loaded once.
pub fn environment() -> Result<Environment, EvalError> {
    static ENVIRONMENT: OnceLock<Result<Environment, String>> = OnceLock::new();
    ENVIRONMENT
        .get_or_init(|| {
            let path = library_path().map_err(|e| e.to_string())?;
            let builder = ort::init_from(&path)
                .map_err(|e| format!("cannot load ONNX Runtime from {}: {e}", path.display()))?;
            // Nothing may be queued for upload, nor written outside the operator's paths.
            builder
                .with_name("validator")
                .with_telemetry(false)
                .build()
                .map_err(|e| format!("cannot start ONNX Runtime: {e}"))
        })
        .clone()
        .map_err(EvalError::Runtime)
}

fn runtime_error(context: &str) -> impl Fn(ort::Error) -> EvalError + '_ {
    move |error| runtime_failure(context, &error.to_string())
}

/// ONNX Runtime's failure in `context`: an allocation it could not make (C++'s
/// `std::bad_alloc`, or its allocators' own message) is [`EvalError::OutOfMemory`], anything
/// else a runtime error.
pub fn runtime_failure(context: &str, message: &str) -> EvalError {
    let lower = message.to_lowercase();
    if lower.contains("std::bad_alloc") || lower.contains("failed to allocate memory for") {
        EvalError::OutOfMemory(format!("{context}: {message}"))
    } else {
        EvalError::Runtime(format!("{context}: {message}"))
    }
}

/// What the CUDA provider needs, said once when it cannot load.
fn cuda_help(error: &ort::Error) -> EvalError {
    let provider = library_path().ok().and_then(|p| {
        p.parent()
            .map(|d| d.join("libonnxruntime_providers_cuda.so"))
    });
    let missing_provider = provider.as_ref().is_some_and(|p| !p.is_file());
    let what = if missing_provider {
        format!(
            "the CUDA provider library {} is missing: this ONNX Runtime is the CPU build; point \
             ORT_DYLIB_PATH at libonnxruntime.so.1.31.1 from the onnxruntime-gpu==1.31.1 wheel, \
             with libonnxruntime_providers_cuda.so beside it",
            provider.map_or_else(String::new, |p| p.display().to_string())
        )
    } else {
        "the CUDA provider did not load; it needs CUDA 13 and cuDNN 9 (libcudart.so.13, \
         libcublas.so.13, libcublasLt.so.13, libcurand.so.10, libcudnn.so.9) on LD_LIBRARY_PATH \
         and a visible GPU"
            .into()
    };
    EvalError::CudaUnavailable(format!("{what} (ONNX Runtime said: {error})"))
}

/// One model's session.
pub struct ModelSession {
    session: Session,
    device: Device,
}

impl std::fmt::Debug for ModelSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelSession")
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

/// A session option the library refused.
fn configuring<R>(error: ort::Error<R>) -> EvalError {
    EvalError::Runtime(format!("configuring the session: {error}"))
}

/// The loss of one sample of a run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SampleLoss {
    /// Mean negative log-likelihood over unmasked targets (NaN when there are none).
    pub loss_mean: f32,
    /// Number of unmasked targets.
    pub target_count: usize,
}

impl ModelSession {
    /// Builds a session for `graph` (an exported model's bytes) over `model`'s weights: the
    /// stored ones read where they lie, the `widened` ones made first on `threads` threads
    /// ([`super::widen`]).
    pub fn new(
        graph: &[u8],
        widened: &[Widened],
        model: &ModelDir,
        device: Device,
        threads: usize,
    ) -> Result<Self, EvalError> {
        let environment = environment()?;
        if device != Device::Cpu && !widened.is_empty() {
            // ONNX Runtime would fall back to the declared data of an initializer it is given
            // on another device than it places it: refuse rather than compute on that.
            return Err(EvalError::Runtime(
                "weights widened in memory are for the CPU provider only".into(),
            ));
        }
        let widened = widen(&model.weights, widened, threads)?;
        let weights_dir = &model.path;
        let folder = weights_dir
            .canonicalize()
            .map_err(|e| EvalError::Io {
                path: weights_dir.to_owned(),
                source: e,
            })?
            .display()
            .to_string();
        let context = "configuring the session";
        // Every option is set here on purpose, not left to the library's defaults:
        // - optimisation level "all" (ort's `Level3` is only the layout level);
        // - weights are read where they lie: external data resolves against the model's own
        //   directory, and CPU prepacking is off: it copies every matrix once more, and its
        //   packed kernels change Llama losses in the last bits (up to 2.9e-6 on
        //   benches/eval_cpu.py's models) for 1.02-1.07x there, and 1.13x on the evaluation
        //   loop of a 3.2e9 bf16 Llama that its packing gives back in session build (+24 s);
        // - initializers get the device allocator, outside the arena, so the arena only ever
        //   holds activations (the widened ones, given to the session, are used where they lie);
        // - the arena grows by what a run asks for, not by powers of two;
        // - on CUDA, TF32 is off: an f32 graph is checked against transformers in f32, which
        //   TF32's 10-bit mantissa would not meet (bf16 and f16 graphs never use TF32);
        // - on CPU, no arena: activations are malloc'd and returned after each run, so peak RSS
        //   is the weights and one run's activations, not the largest run rounded up to a power
        //   of two and kept.
        let mut builder = Session::builder(&environment)
            .map_err(runtime_error(context))?
            .with_optimization_level(GraphOptimizationLevel::All)
            .map_err(configuring)?
            .with_intra_threads(threads.max(1))
            .map_err(configuring)?
            .with_config_entry(
                "session.model_external_initializers_file_folder_path",
                &folder,
            )
            .map_err(configuring)?
            .with_prepacking(false)
            .map_err(configuring)?
            .with_device_allocated_initializers()
            .map_err(configuring)?;
        for initializer in widened {
            let value = Tensor::from_array((initializer.shape, initializer.values))
                .map_err(|e| runtime_failure("handing over a widened weight", &e.to_string()))?;
            builder = builder
                .with_initializer(initializer.name, value.into_dyn())
                .map_err(configuring)?;
        }
        if device == Device::Cpu {
            let cpu = ort::ep::CPU::default().with_arena_allocator(false).build();
            builder = builder
                .with_execution_providers([cpu])
                .map_err(configuring)?;
        }
        if let Device::Cuda { device_id } = device {
            let cuda = ort::ep::CUDA::default()
                .with_device_id(device_id)
                .with_arena_extend_strategy(ort::ep::ArenaExtendStrategy::SameAsRequested)
                .with_tf32(false)
                .build()
                .error_on_failure();
            builder = builder
                .with_execution_providers([cuda])
                .map_err(|e| cuda_help(&e.into()))?;
        }
        let session = builder
            .commit_from_memory(graph)
            .map_err(|e| match device {
                Device::Cuda { .. } if e.to_string().to_lowercase().contains("cuda") => {
                    cuda_help(&e)
                }
                _ => runtime_failure("building the session", &e.to_string()),
            })?;
        Ok(Self { session, device })
    }

    /// The device the session runs on.
    pub fn device(&self) -> Device {
        self.device
    }

    /// Runs `batch` samples of `length` tokens each, row after row in `ids` and `labels`
    /// (`-100` masked, padding included): one loss per sample.
    pub fn run(
        &mut self,
        ids: &[i64],
        labels: &[i64],
        batch: usize,
        length: usize,
    ) -> Result<Vec<SampleLoss>, EvalError> {
        let context = "running the model";
        if ids.len() != batch * length || labels.len() != ids.len() {
            return Err(EvalError::Runtime(format!(
                "{context}: {} ids and {} labels for {batch} × {length}",
                ids.len(),
                labels.len()
            )));
        }
        let ids =
            Tensor::from_array(([batch, length], ids.to_vec())).map_err(runtime_error(context))?;
        let labels = Tensor::from_array(([batch, length], labels.to_vec()))
            .map_err(runtime_error(context))?;
        let outputs = self
            .session
            .run(ort::inputs!["input_ids" => ids, "labels" => labels])
            .map_err(runtime_error(context))?;
        let column = |name: &str| -> Result<Vec<f32>, EvalError> {
            let (_, values) = outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(runtime_error(context))?;
            if values.len() == batch {
                Ok(values.to_vec())
            } else {
                Err(EvalError::Runtime(format!(
                    "{context}: {name} has {} values for {batch} samples",
                    values.len()
                )))
            }
        };
        let losses = column("loss_mean")?;
        let counts = column("target_count")?;
        Ok(losses
            .into_iter()
            .zip(counts)
            .map(|(loss_mean, count)| {
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let target_count = count as usize;
                SampleLoss {
                    loss_mean,
                    target_count,
                }
            })
            .collect())
    }
}
