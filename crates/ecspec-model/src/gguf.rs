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

    /// Reads a GGUF header (magic, version, metadata, tensor infos) from any reader, bytes in
    /// memory included, and returns its metadata: what [`GgufFile::open`] reads from a file.
    /// `source` names the input in errors.
    ///
    /// # Errors
    /// [`ModelError::Gguf`] naming `source` when the bytes are not a GGUF header.
    pub fn read<R: Read + Seek>(reader: &mut R, source: &Path) -> Result<Self> {
        read_header(reader, source).map(|content| Self(content.metadata))
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

/// The header of the GGUF at `reader`'s position; `source` names it in errors.
fn read_header<R: Read + Seek>(reader: &mut R, source: &Path) -> Result<gguf_file::Content> {
    let gerr = |reason: String| ModelError::Gguf {
        path: source.to_path_buf(),
        reason,
    };
    let start = reader.stream_position().map_err(|e| gerr(e.to_string()))?;
    let mut magic = [0u8; 4];
    let mut got = 0;
    while got < magic.len() {
        match reader.read(&mut magic[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(gerr(e.to_string())),
        }
    }
    if got < 4 || !matches!(&magic, b"GGUF" | b"FUGG") {
        return Err(gerr(format!(
            "not a GGUF file: it starts with {:02x?}, not the magic \"GGUF\"",
            &magic[..got]
        )));
    }
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| gerr(e.to_string()))?;
    // candle 0.11.1 divides by `general.alignment` after reading the header: refuse a 0 first.
    let zero_alignment = sets_zero_alignment(reader).unwrap_or(false);
    reader
        .seek(SeekFrom::Start(start))
        .map_err(|e| gerr(e.to_string()))?;
    if zero_alignment {
        return Err(gerr(
            "general.alignment is 0; tensor data must be aligned to at least 1 byte".into(),
        ));
    }
    gguf_file::Content::read(reader).map_err(|e| gerr(header_reason(e)))
}

/// What candle's header reader reported, without the backtrace it appends when
/// `RUST_BACKTRACE` is set, and naming a short read as a truncated header.
fn header_reason(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => header_reason(*inner),
        candle_core::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("the file ends inside the GGUF header (truncated?): {io}")
        }
        e => e.to_string(),
    }
}

/// Whether the GGUF header at `r`'s position sets `general.alignment` (its last occurrence, the
/// one candle keeps) to an integer 0. Walks the metadata without allocating for values; any
/// malformation ends the walk (an `Err`) and is left for candle's reader to report.
fn sets_zero_alignment<R: Read + Seek>(r: &mut R) -> std::io::Result<bool> {
    fn u32_of(r: &mut impl Read) -> std::io::Result<u32> {
        let mut b = [0; 4];
        r.read_exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn len_of(r: &mut impl Read, v1: bool) -> std::io::Result<u64> {
        if v1 {
            return u32_of(r).map(u64::from);
        }
        let mut b = [0; 8];
        r.read_exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn skip(r: &mut impl Seek, n: u64) -> std::io::Result<()> {
        let n = i64::try_from(n).map_err(|_| std::io::ErrorKind::InvalidData)?;
        r.seek(SeekFrom::Current(n)).map(|_| ())
    }
    /// Bytes of a fixed-size value of GGUF type `t` (0–7, 10–12).
    fn fixed_size(t: u32) -> Option<u64> {
        match t {
            0 | 1 | 7 => Some(1),
            2 | 3 => Some(2),
            4..=6 => Some(4),
            10..=12 => Some(8),
            _ => None,
        }
    }
    fn skip_value<R: Read + Seek>(r: &mut R, t: u32, v1: bool, depth: u32) -> std::io::Result<()> {
        let bad = || std::io::Error::from(std::io::ErrorKind::InvalidData);
        match (t, fixed_size(t)) {
            (_, Some(n)) => skip(r, n),
            (8, None) => {
                let n = len_of(r, v1)?;
                skip(r, n)
            }
            (9, None) if depth < 64 => {
                let elem = u32_of(r)?;
                let count = len_of(r, v1)?;
                match fixed_size(elem) {
                    Some(n) => skip(r, count.checked_mul(n).ok_or_else(bad)?),
                    // Each element takes at least one byte, so a count beyond the file ends
                    // at its end.
                    None => (0..count).try_for_each(|_| skip_value(r, elem, v1, depth + 1)),
                }
            }
            _ => Err(bad()),
        }
    }
    let mut head = [0; 8];
    r.read_exact(&mut head)?;
    if !matches!(&head[..4], b"GGUF" | b"FUGG") {
        return Ok(false);
    }
    let v1 = u32::from_le_bytes([head[4], head[5], head[6], head[7]]) == 1;
    let _tensors = len_of(r, v1)?;
    let entries = len_of(r, v1)?;
    let mut zero = false;
    for _ in 0..entries {
        let key_len = len_of(r, v1)?;
        let is_alignment = if key_len == b"general.alignment".len() as u64 {
            let mut key = [0; 17];
            r.read_exact(&mut key)?;
            &key == b"general.alignment"
        } else {
            skip(r, key_len)?;
            false
        };
        let t = u32_of(r)?;
        if is_alignment && matches!(t, 0..=5) {
            let mut b = [0; 4];
            let n = fixed_size(t).unwrap_or(4) as usize;
            r.read_exact(&mut b[..n])?;
            zero = b == [0; 4];
        } else {
            if is_alignment {
                zero = false;
            }
            skip_value(r, t, v1, 0)?;
        }
    }
    Ok(zero)
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
        let content = read_header(&mut reader, path)?;
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
            let start = self
                .content
                .tensor_data_offset
                .checked_add(info.offset)
                .ok_or_else(|| ModelError::Tensor {
                    name: name.clone(),
                    reason: format!("offset {} is beyond any file", info.offset),
                })?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A GGUF v3 header without tensors whose metadata is `general.alignment` set to each of
    /// `alignments` in turn (u32 values).
    fn header(alignments: &[u32]) -> Vec<u8> {
        let mut b = b"GGUF".to_vec();
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&0u64.to_le_bytes());
        b.extend_from_slice(&(alignments.len() as u64).to_le_bytes());
        for &a in alignments {
            b.extend_from_slice(&17u64.to_le_bytes());
            b.extend_from_slice(b"general.alignment");
            b.extend_from_slice(&4u32.to_le_bytes());
            b.extend_from_slice(&a.to_le_bytes());
        }
        b
    }

    fn read(bytes: &[u8]) -> Result<Metadata> {
        Metadata::read(&mut Cursor::new(bytes), Path::new("h.gguf"))
    }

    #[test]
    fn an_alignment_of_zero_is_an_error_not_a_division_by_zero() {
        let e = read(&header(&[0])).err().expect("refused");
        assert_eq!(
            e.to_string(),
            "cannot read GGUF file h.gguf: general.alignment is 0; tensor data must be aligned to at least 1 byte"
        );
    }

    #[test]
    fn the_last_alignment_given_is_the_one_checked() {
        // candle keeps the last value of a repeated key.
        assert!(read(&header(&[0, 32])).is_ok());
        assert!(read(&header(&[32, 0])).is_err());
        assert!(read(&header(&[64])).is_ok());
    }

    #[test]
    fn the_check_leaves_the_reader_where_the_header_starts() {
        let mut bytes = vec![0xAA; 3];
        bytes.extend(header(&[16]));
        let mut c = Cursor::new(&bytes[..]);
        c.set_position(3);
        assert!(Metadata::read(&mut c, Path::new("h.gguf")).is_ok());
    }
}
