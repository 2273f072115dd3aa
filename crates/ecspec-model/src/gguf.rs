//! GGUF files: metadata access with precise errors, tensor loading with type conversion,
//! and hashing of the raw tensor bytes (to name a base model).

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::Device;
use sha2::{Digest, Sha256};

use crate::error::{ModelError, Result};
use crate::kernels::{QWeight, WeightType};

/// GGUF metadata with typed getters whose errors name the key.
pub struct Metadata(HashMap<String, gguf_file::Value>);

impl Metadata {
    fn get(&self, key: &str) -> Result<&gguf_file::Value> {
        self.0.get(key).ok_or_else(|| ModelError::Metadata {
            key: key.to_string(),
            reason: "missing".into(),
        })
    }

    fn bad(key: &str, e: impl std::fmt::Display) -> ModelError {
        ModelError::Metadata {
            key: key.to_string(),
            reason: e.to_string(),
        }
    }

    /// Whether `key` is present.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// A string value.
    pub fn string(&self, key: &str) -> Result<String> {
        self.get(key)?
            .to_string()
            .cloned()
            .map_err(|e| Self::bad(key, e))
    }

    /// An optional string value.
    pub fn string_opt(&self, key: &str) -> Result<Option<String>> {
        if self.contains(key) {
            self.string(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An unsigned integer of any width.
    pub fn uint(&self, key: &str) -> Result<usize> {
        let v = self.get(key)?;
        let n = match v {
            gguf_file::Value::U8(x) => *x as u64,
            gguf_file::Value::U16(x) => *x as u64,
            gguf_file::Value::U32(x) => *x as u64,
            gguf_file::Value::U64(x) => *x,
            gguf_file::Value::I32(x) if *x >= 0 => *x as u64,
            gguf_file::Value::I64(x) if *x >= 0 => *x as u64,
            other => {
                return Err(Self::bad(
                    key,
                    format!("expected an unsigned integer, found {other:?}"),
                ))
            }
        };
        usize::try_from(n).map_err(|e| Self::bad(key, e))
    }

    /// An optional unsigned integer.
    pub fn uint_opt(&self, key: &str) -> Result<Option<usize>> {
        if self.contains(key) {
            self.uint(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A float.
    pub fn float(&self, key: &str) -> Result<f32> {
        match self.get(key)? {
            gguf_file::Value::F32(x) => Ok(*x),
            gguf_file::Value::F64(x) => Ok(*x as f32),
            other => Err(Self::bad(key, format!("expected a float, found {other:?}"))),
        }
    }

    /// An optional float.
    pub fn float_opt(&self, key: &str) -> Result<Option<f32>> {
        if self.contains(key) {
            self.float(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// An optional bool.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        if !self.contains(key) {
            return Ok(None);
        }
        self.get(key)?
            .to_bool()
            .map(Some)
            .map_err(|e| Self::bad(key, e))
    }

    /// Length of an array value.
    pub fn array_len(&self, key: &str) -> Result<usize> {
        Ok(self
            .get(key)?
            .to_vec()
            .map_err(|e| Self::bad(key, e))?
            .len())
    }

    /// An array of strings.
    pub fn strings(&self, key: &str) -> Result<Vec<String>> {
        let arr = self.get(key)?.to_vec().map_err(|e| Self::bad(key, e))?;
        arr.iter()
            .map(|v| v.to_string().cloned().map_err(|e| Self::bad(key, e)))
            .collect()
    }

    /// An array of integers (any width).
    pub fn ints(&self, key: &str) -> Result<Vec<i64>> {
        let arr = self.get(key)?.to_vec().map_err(|e| Self::bad(key, e))?;
        arr.iter()
            .map(|v| match v {
                gguf_file::Value::I32(x) => Ok(*x as i64),
                gguf_file::Value::U32(x) => Ok(*x as i64),
                gguf_file::Value::I8(x) => Ok(*x as i64),
                gguf_file::Value::U8(x) => Ok(*x as i64),
                gguf_file::Value::I64(x) => Ok(*x),
                other => Err(Self::bad(
                    key,
                    format!("expected integers, found {other:?}"),
                )),
            })
            .collect()
    }
}

/// The runtime's type for a stored tensor type: the types its kernels multiply natively
/// ([`WeightType`]) as they are; other quantized types are converted to Q8_0 (F32 when rows do
/// not split into 32-value blocks), f16/bf16 to F32 (exact).
fn runtime_type(t: GgmlDType) -> Option<WeightType> {
    Some(match t {
        GgmlDType::F32 => WeightType::F32,
        GgmlDType::Q8_0 => WeightType::Q8_0,
        GgmlDType::Q4_1 => WeightType::Q4_1,
        GgmlDType::Q5_0 => WeightType::Q5_0,
        GgmlDType::Q4K => WeightType::Q4K,
        GgmlDType::Q6K => WeightType::Q6K,
        _ => return None,
    })
}

/// A candle tensor as a runtime weight matrix (`rows × cols`), converting types the kernels
/// do not multiply natively (see [`runtime_type`]).
pub(crate) fn to_weight(t: &QTensor, rows: usize, cols: usize) -> Result<QWeight> {
    let (kind, bytes) = match runtime_type(t.dtype()) {
        Some(kind) => (kind, t.data()?.into_owned()),
        None if matches!(t.dtype(), GgmlDType::F16 | GgmlDType::BF16)
            || !cols.is_multiple_of(32) =>
        {
            let v = t
                .dequantize(&Device::Cpu)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            return Ok(QWeight::from_f32(rows, cols, v));
        }
        None => {
            let f = t.dequantize(&Device::Cpu)?;
            let q = QTensor::quantize(&f, GgmlDType::Q8_0)?;
            (WeightType::Q8_0, q.data()?.into_owned())
        }
    };
    QWeight::from_bytes(kind, rows, cols, bytes).map_err(|reason| ModelError::Tensor {
        name: format!("{:?} matrix", t.dtype()),
        reason,
    })
}

/// An open GGUF file.
pub struct GgufFile {
    path: PathBuf,
    content: gguf_file::Content,
    reader: BufReader<File>,
    /// Metadata of the file.
    pub metadata: Metadata,
}

impl GgufFile {
    /// Opens and parses the header of a GGUF file.
    ///
    /// # Errors
    /// [`ModelError::Gguf`] naming the path when the file cannot be opened or is not GGUF.
    pub fn open(path: &Path) -> Result<Self> {
        let gerr = |reason: String| ModelError::Gguf {
            path: path.to_path_buf(),
            reason,
        };
        let file = File::open(path).map_err(|e| gerr(e.to_string()))?;
        let mut reader = BufReader::new(file);
        let content = gguf_file::Content::read(&mut reader).map_err(|e| gerr(e.to_string()))?;
        let metadata = Metadata(content.metadata.clone());
        Ok(Self {
            path: path.to_path_buf(),
            content,
            reader,
            metadata,
        })
    }

    /// Path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file holds a tensor of that name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Loads a tensor as stored. `shape` is the expected shape in candle's (rows, cols)
    /// order, checked.
    pub fn qtensor(&mut self, name: &str, shape: &[usize]) -> Result<Arc<QTensor>> {
        let t = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| ModelError::Tensor {
                name: name.into(),
                reason: e.to_string(),
            })?;
        if t.shape().dims() != shape {
            return Err(ModelError::Tensor {
                name: name.into(),
                reason: format!("expected shape {shape:?}, file has {:?}", t.shape().dims()),
            });
        }
        Ok(Arc::new(t))
    }

    /// Loads a matrix (`shape` = [rows, cols], checked) for the runtime's kernels: Q8_0, Q4_1,
    /// Q5_0, Q4_K, Q6_K and F32 as stored, other types converted (f16/bf16 to F32, other
    /// quantized types to Q8_0).
    pub fn weight(&mut self, name: &str, shape: [usize; 2]) -> Result<QWeight> {
        let t = self.qtensor(name, &shape)?;
        to_weight(&t, shape[0], shape[1]).map_err(|e| match e {
            ModelError::Tensor { reason, .. } => ModelError::Tensor {
                name: name.into(),
                reason,
            },
            other => other,
        })
    }

    /// Loads a 1-D f32 vector (norm weights, biases) of length `len`.
    pub fn vector(&mut self, name: &str, len: usize) -> Result<Vec<f32>> {
        let t = self
            .content
            .tensor(&mut self.reader, name, &Device::Cpu)
            .map_err(|e| ModelError::Tensor {
                name: name.into(),
                reason: e.to_string(),
            })?;
        let v = t
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        if v.len() != len {
            return Err(ModelError::Tensor {
                name: name.into(),
                reason: format!("expected {len} values, file has {}", v.len()),
            });
        }
        Ok(v)
    }

    /// SHA-256 over the raw stored bytes of the named tensors, in the given order, each
    /// preceded by its name. Used to name a frozen base (embedding, head, shared layers).
    pub fn hash_tensors(&mut self, names: &[String]) -> Result<String> {
        let mut h = Sha256::new();
        for name in names {
            let info = self
                .content
                .tensor_infos
                .get(name)
                .ok_or_else(|| ModelError::Tensor {
                    name: name.clone(),
                    reason: "missing (needed for the base hash)".into(),
                })?;
            let elems = info.shape.elem_count();
            let bytes = elems / info.ggml_dtype.block_size() * info.ggml_dtype.type_size();
            let start = self.content.tensor_data_offset + info.offset;
            self.reader
                .seek(SeekFrom::Start(start))
                .map_err(|e| ModelError::Gguf {
                    path: self.path.clone(),
                    reason: e.to_string(),
                })?;
            h.update(name.as_bytes());
            let mut left = bytes;
            let mut buf = vec![0u8; 1 << 20];
            while left > 0 {
                let n = left.min(buf.len());
                self.reader
                    .read_exact(&mut buf[..n])
                    .map_err(|e| ModelError::Gguf {
                        path: self.path.clone(),
                        reason: e.to_string(),
                    })?;
                h.update(&buf[..n]);
                left -= n;
            }
        }
        Ok(hex::encode(h.finalize()))
    }
}
