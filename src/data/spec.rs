//! A data source named on a command line (`local:PATH`, `wandb[:ENTITY/PROJECT]`,
//! `hf:OWNER/NAME@REVISION[/PREFIX]`), parsed once into one [`Source`] value the runner and the
//! tools fetch batches from.

use std::path::PathBuf;

use super::cortex::Cortex;
use super::local::LocalFile;
use super::{BatchOutcome, BatchRequest, DataError, DataSource};

/// A data source as named on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceSpec {
    /// `local:PATH`.
    Local(PathBuf),
    /// `wandb` or `wandb:ENTITY/PROJECT`.
    Wandb {
        /// The entity.
        entity: String,
        /// The project.
        project: String,
    },
    /// `hf:OWNER/NAME@REVISION[/PATH_PREFIX]`.
    HuggingFace {
        /// `owner/name`.
        repo: String,
        /// The pinned revision.
        revision: String,
        /// Only files under this prefix.
        prefix: String,
    },
}

impl std::str::FromStr for SourceSpec {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        if let Some(path) = text.strip_prefix("local:") {
            return Ok(SourceSpec::Local(PathBuf::from(path)));
        }
        if text == "wandb" {
            return Ok(SourceSpec::Wandb {
                entity: "cortex-t".into(),
                project: "multi-modality".into(),
            });
        }
        if let Some(path) = text.strip_prefix("wandb:") {
            let (entity, project) = path
                .split_once('/')
                .ok_or_else(|| format!("{text:?}: use wandb:ENTITY/PROJECT"))?;
            return Ok(SourceSpec::Wandb {
                entity: entity.into(),
                project: project.into(),
            });
        }
        if let Some(rest) = text.strip_prefix("hf:") {
            let (repo, after) = rest
                .split_once('@')
                .ok_or_else(|| format!("{text:?}: use hf:OWNER/NAME@REVISION[/PREFIX]"))?;
            let (revision, prefix) = after.split_once('/').unwrap_or((after, ""));
            return Ok(SourceSpec::HuggingFace {
                repo: repo.into(),
                revision: revision.into(),
                prefix: prefix.into(),
            });
        }
        Err(format!(
            "unknown source {text:?}: use local:PATH, wandb[:ENTITY/PROJECT] or hf:OWNER/NAME@REVISION"
        ))
    }
}

/// How a source reads rows, beside its name.
#[derive(Debug, Clone)]
pub struct SourceOptions {
    /// The prompt's field (local and hf sources).
    pub prompt_field: String,
    /// The response's field (local and hf sources).
    pub response_field: String,
    /// Apply N's unwanted-phrase filter to local and hf sources (wandb always does).
    pub phrase_filter: bool,
    /// The wandb API.
    pub wandb_endpoint: String,
    /// Where hf dataset files are cached.
    pub cache_dir: PathBuf,
}

impl Default for SourceOptions {
    fn default() -> Self {
        Self {
            prompt_field: "prompt".into(),
            response_field: "response".into(),
            phrase_filter: false,
            wandb_endpoint: "https://api.wandb.ai".into(),
            cache_dir: PathBuf::from("data-cache"),
        }
    }
}

/// A ready data source.
#[derive(Debug, Clone)]
pub enum Source {
    /// A local JSON Lines file.
    Local(LocalFile),
    /// N's Cortex runs on wandb.
    Wandb(Box<Cortex>),
    /// Hugging Face dataset files.
    #[cfg(feature = "hub")]
    HuggingFace(Box<super::hf::HfDataset>),
}

impl Source {
    /// Builds the source `spec` names.
    pub fn new(spec: &SourceSpec, options: &SourceOptions) -> Result<Self, DataError> {
        match spec {
            SourceSpec::Local(path) => Ok(Source::Local(LocalFile {
                path: path.clone(),
                prompt_field: options.prompt_field.clone(),
                response_field: options.response_field.clone(),
                phrase_filter: options.phrase_filter,
            })),
            SourceSpec::Wandb { entity, project } => {
                let mut source = Cortex::n_defaults(&options.wandb_endpoint);
                source.entity.clone_from(entity);
                source.project.clone_from(project);
                Ok(Source::Wandb(Box::new(source)))
            }
            #[cfg(feature = "hub")]
            SourceSpec::HuggingFace {
                repo,
                revision,
                prefix,
            } => {
                let mut hub_options = crate::hub::HubOptions::new(options.cache_dir.clone());
                hub_options.progress = false;
                let hub = crate::hub::Hub::new(hub_options)
                    .map_err(|e| DataError::Config(e.to_string()))?;
                Ok(Source::HuggingFace(Box::new(super::hf::HfDataset {
                    hub,
                    repo: repo.clone(),
                    revision: revision.clone(),
                    path_prefix: prefix.clone(),
                    prompt_field: options.prompt_field.clone(),
                    response_field: options.response_field.clone(),
                    phrase_filter: options.phrase_filter,
                    cache_dir: options.cache_dir.clone(),
                })))
            }
            #[cfg(not(feature = "hub"))]
            SourceSpec::HuggingFace { .. } => {
                Err(DataError::Config("built without the hub feature".into()))
            }
        }
    }
}

impl DataSource for Source {
    fn name(&self) -> String {
        match self {
            Source::Local(source) => source.name(),
            Source::Wandb(source) => source.name(),
            #[cfg(feature = "hub")]
            Source::HuggingFace(source) => source.name(),
        }
    }

    async fn fetch(&self, request: &BatchRequest) -> Result<BatchOutcome, DataError> {
        match self {
            Source::Local(source) => source.fetch(request).await,
            Source::Wandb(source) => source.fetch(request).await,
            #[cfg(feature = "hub")]
            Source::HuggingFace(source) => source.fetch(request).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            "local:a/b.jsonl".parse::<SourceSpec>().unwrap(),
            SourceSpec::Local(PathBuf::from("a/b.jsonl"))
        );
        assert_eq!(
            "hf:o/n@abc/data".parse::<SourceSpec>().unwrap(),
            SourceSpec::HuggingFace {
                repo: "o/n".into(),
                revision: "abc".into(),
                prefix: "data".into()
            }
        );
        assert!(matches!(
            "wandb".parse::<SourceSpec>().unwrap(),
            SourceSpec::Wandb { .. }
        ));
        assert!("ftp:x".parse::<SourceSpec>().is_err());
        assert!("hf:o/n".parse::<SourceSpec>().is_err());
    }
}
