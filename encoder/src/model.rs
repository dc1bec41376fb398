//! The BERT encoder: embeddings, then per layer self-attention and a
//! feed-forward block, each closed by a residual sum and a layer norm.

use serde::Deserialize;

use crate::dispatch::{Pass, dispatch};
use crate::linear::Linear;
use crate::math::{axpy, dot, gelu_in_place, layer_norm, softmax_in_place};
use crate::{EncodeError, LoadError};

/// The fields of a Hugging Face `config.json` this encoder reads.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub max_position_embeddings: usize,
    pub vocab_size: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: String,
    #[serde(default = "default_position_type")]
    pub position_embedding_type: String,
}

fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> String {
    "gelu".to_owned()
}
fn default_position_type() -> String {
    "absolute".to_owned()
}

impl BertConfig {
    pub fn from_json(text: &str) -> Result<Self, LoadError> {
        let config: Self =
            serde_json::from_str(text).map_err(|e| LoadError::Config(e.to_string()))?;
        if config.hidden_act != "gelu" {
            return Err(LoadError::Config(format!(
                "hidden_act {:?} is not supported (only \"gelu\")",
                config.hidden_act
            )));
        }
        if config.position_embedding_type != "absolute" {
            return Err(LoadError::Config(format!(
                "position_embedding_type {:?} is not supported (only \"absolute\")",
                config.position_embedding_type
            )));
        }
        if config.num_attention_heads == 0
            || !config
                .hidden_size
                .is_multiple_of(config.num_attention_heads)
        {
            return Err(LoadError::Config(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                config.hidden_size, config.num_attention_heads
            )));
        }
        Ok(config)
    }
}

#[derive(Debug)]
struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
}

#[derive(Debug)]
struct Layer {
    /// Query, key and value side by side.
    qkv: Linear,
    attention_out: Linear,
    attention_norm: Norm,
    intermediate: Linear,
    output: Linear,
    output_norm: Norm,
}

/// A loaded BERT encoder. Immutable, so one can serve many threads.
#[derive(Debug)]
pub struct BertEncoder {
    hidden: usize,
    heads: usize,
    intermediate: usize,
    max_positions: usize,
    vocabulary: usize,
    eps: f32,
    word_embeddings: Vec<f32>,
    position_embeddings: Vec<f32>,
    /// Token type 0's embedding: every text is one segment.
    segment_embedding: Vec<f32>,
    embedding_norm: Norm,
    layers: Vec<Layer>,
}

/// Reads f32 tensors out of a safetensors file, with or without the `bert.`
/// prefix some checkpoints carry.
struct Weights<'a>(safetensors::SafeTensors<'a>);

impl Weights<'_> {
    fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, LoadError> {
        let view = self
            .0
            .tensor(name)
            .or_else(|_| self.0.tensor(&format!("bert.{name}")))
            .map_err(|_| LoadError::Weights(format!("tensor {name} is missing")))?;
        if view.shape() != shape {
            return Err(LoadError::Weights(format!(
                "tensor {name} has shape {:?}, expected {shape:?}",
                view.shape()
            )));
        }
        if view.dtype() != safetensors::Dtype::F32 {
            return Err(LoadError::Weights(format!(
                "tensor {name} is {:?}; only F32 checkpoints are supported",
                view.dtype()
            )));
        }
        let (chunks, _) = view.data().as_chunks::<4>();
        Ok(chunks.iter().map(|b| f32::from_le_bytes(*b)).collect())
    }

    fn norm(&self, prefix: &str, size: usize) -> Result<Norm, LoadError> {
        // Older checkpoints name the layer norm's parameters gamma and beta;
        // when neither name is there, the error names today's.
        let either = |name: &str, old_name: &str| {
            self.get(&format!("{prefix}.{name}"), &[size]).or_else(|e| {
                self.get(&format!("{prefix}.{old_name}"), &[size])
                    .map_err(|_| e)
            })
        };
        Ok(Norm {
            weight: either("weight", "gamma")?,
            bias: either("bias", "beta")?,
        })
    }

    fn linear(&self, prefix: &str, outputs: usize, inputs: usize) -> Result<Linear, LoadError> {
        let weight = self.get(&format!("{prefix}.weight"), &[outputs, inputs])?;
        let bias = self.get(&format!("{prefix}.bias"), &[outputs])?;
        Ok(Linear::new(&weight, bias, outputs, inputs))
    }
}

impl BertEncoder {
    /// Loads the encoder from the bytes of a `model.safetensors` file.
    pub fn from_safetensors(bytes: &[u8], config: &BertConfig) -> Result<Self, LoadError> {
        let tensors = safetensors::SafeTensors::deserialize(bytes)
            .map_err(|e| LoadError::Weights(format!("not a safetensors file: {e}")))?;
        let w = Weights(tensors);
        let h = config.hidden_size;
        let i = config.intermediate_size;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for l in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{l}");
            let attention = format!("{p}.attention.self");
            let query = w.get(&format!("{attention}.query.weight"), &[h, h])?;
            let key = w.get(&format!("{attention}.key.weight"), &[h, h])?;
            let value = w.get(&format!("{attention}.value.weight"), &[h, h])?;
            let qkv = Linear::concat(
                &[
                    (&query, w.get(&format!("{attention}.query.bias"), &[h])?, h),
                    (&key, w.get(&format!("{attention}.key.bias"), &[h])?, h),
                    (&value, w.get(&format!("{attention}.value.bias"), &[h])?, h),
                ],
                h,
            );
            layers.push(Layer {
                qkv,
                attention_out: w.linear(&format!("{p}.attention.output.dense"), h, h)?,
                attention_norm: w.norm(&format!("{p}.attention.output.LayerNorm"), h)?,
                intermediate: w.linear(&format!("{p}.intermediate.dense"), i, h)?,
                output: w.linear(&format!("{p}.output.dense"), h, i)?,
                output_norm: w.norm(&format!("{p}.output.LayerNorm"), h)?,
            });
        }
        let token_types = w.get(
            "embeddings.token_type_embeddings.weight",
            &[config.type_vocab_size, h],
        )?;
        Ok(Self {
            hidden: h,
            heads: config.num_attention_heads,
            intermediate: i,
            max_positions: config.max_position_embeddings,
            vocabulary: config.vocab_size,
            eps: config.layer_norm_eps as f32,
            word_embeddings: w.get("embeddings.word_embeddings.weight", &[config.vocab_size, h])?,
            position_embeddings: w.get(
                "embeddings.position_embeddings.weight",
                &[config.max_position_embeddings, h],
            )?,
            segment_embedding: token_types[..h].to_vec(),
            embedding_norm: w.norm("embeddings.LayerNorm", h)?,
            layers,
        })
    }

    /// Dimensions of the embeddings.
    pub fn dimensions(&self) -> usize {
        self.hidden
    }

    /// Most tokens one text may have, special tokens included.
    pub fn max_positions(&self) -> usize {
        self.max_positions
    }

    /// The sentence embedding of one tokenised text (special tokens
    /// included): the mean of the last layer's hidden states, L2-normalised.
    pub fn embed(&self, ids: &[u32]) -> Result<Vec<f32>, EncodeError> {
        if ids.is_empty() {
            return Err(EncodeError::Empty);
        }
        if ids.len() > self.max_positions {
            return Err(EncodeError::TooLong {
                tokens: ids.len(),
                limit: self.max_positions,
            });
        }
        if let Some(&id) = ids.iter().find(|&&id| id as usize >= self.vocabulary) {
            return Err(EncodeError::UnknownToken {
                id,
                vocabulary: self.vocabulary,
            });
        }
        Ok(dispatch(Forward { model: self, ids }))
    }

    /// Embeds several texts, spread over up to `threads` threads.
    pub fn embed_many(
        &self,
        texts: &[&[u32]],
        threads: usize,
    ) -> Result<Vec<Vec<f32>>, EncodeError> {
        let threads = threads.clamp(1, texts.len().max(1));
        if threads == 1 {
            return texts.iter().map(|ids| self.embed(ids)).collect();
        }
        let share = texts.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let workers: Vec<_> = texts
                .chunks(share)
                .map(|part| {
                    scope.spawn(move || part.iter().map(|ids| self.embed(ids)).collect::<Vec<_>>())
                })
                .collect();
            let mut all = Vec::with_capacity(texts.len());
            for worker in workers {
                match worker.join() {
                    Ok(results) => all.extend(results),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            all.into_iter().collect()
        })
    }
}

struct Forward<'a> {
    model: &'a BertEncoder,
    ids: &'a [u32],
}

impl Pass for Forward<'_> {
    type Output = Vec<f32>;

    #[inline(always)]
    fn run<const FMA: bool>(self) -> Vec<f32> {
        let Forward { model: m, ids } = self;
        let (h, tokens) = (m.hidden, ids.len());

        let mut hidden = vec![0.0f32; tokens * h];
        for (position, (row, &id)) in hidden.chunks_exact_mut(h).zip(ids).enumerate() {
            let word = &m.word_embeddings[id as usize * h..][..h];
            let place = &m.position_embeddings[position * h..][..h];
            for (((x, w), p), s) in row
                .iter_mut()
                .zip(word)
                .zip(place)
                .zip(&m.segment_embedding)
            {
                *x = w + p + s;
            }
            layer_norm::<FMA>(row, &m.embedding_norm.weight, &m.embedding_norm.bias, m.eps);
        }

        let mut qkv = vec![0.0f32; tokens * 3 * h];
        let mut context = vec![0.0f32; tokens * h];
        let mut sum = vec![0.0f32; tokens * h];
        let mut wide = vec![0.0f32; tokens * m.intermediate];
        let mut scores = vec![0.0f32; tokens];
        let mut scratch = Vec::new();
        for layer in &m.layers {
            layer.qkv.forward::<FMA>(&hidden, &mut qkv, &mut scratch);
            attend::<FMA>(&qkv, h, m.heads, &mut scores, &mut context);
            layer
                .attention_out
                .forward::<FMA>(&context, &mut sum, &mut scratch);
            add_and_norm::<FMA>(&mut hidden, &sum, &layer.attention_norm, m.eps);

            layer
                .intermediate
                .forward::<FMA>(&hidden, &mut wide, &mut scratch);
            gelu_in_place::<FMA>(&mut wide);
            layer.output.forward::<FMA>(&wide, &mut sum, &mut scratch);
            add_and_norm::<FMA>(&mut hidden, &sum, &layer.output_norm, m.eps);
        }

        // Mean over tokens, then unit length.
        let mut pooled = vec![0.0f32; h];
        for row in hidden.chunks_exact(h) {
            for (p, x) in pooled.iter_mut().zip(row) {
                *p += x;
            }
        }
        let norm = dot::<FMA>(&pooled, &pooled).sqrt().max(1e-12);
        for p in pooled.iter_mut() {
            *p /= norm;
        }
        pooled
    }
}

/// `hidden = LayerNorm(hidden + update)`, row by row.
#[inline(always)]
fn add_and_norm<const FMA: bool>(hidden: &mut [f32], update: &[f32], norm: &Norm, eps: f32) {
    let h = norm.weight.len();
    for (row, update) in hidden.chunks_exact_mut(h).zip(update.chunks_exact(h)) {
        for (x, u) in row.iter_mut().zip(update) {
            *x += u;
        }
        layer_norm::<FMA>(row, &norm.weight, &norm.bias, eps);
    }
}

/// Multi-head self-attention over all tokens (one text, so no padding and
/// no mask): `context = softmax(q·kᵀ / √d) · v`, head by head.
#[inline(always)]
fn attend<const FMA: bool>(
    qkv: &[f32],
    h: usize,
    heads: usize,
    scores: &mut [f32],
    context: &mut [f32],
) {
    let d = h / heads;
    let scale = 1.0 / (d as f32).sqrt();
    let rows: Vec<&[f32]> = qkv.chunks_exact(3 * h).collect();
    for head in 0..heads {
        let at = head * d;
        for (i, out) in context.chunks_exact_mut(h).enumerate() {
            let q = &rows[i][at..at + d];
            for (s, row) in scores.iter_mut().zip(&rows) {
                *s = dot::<FMA>(q, &row[h + at..h + at + d]) * scale;
            }
            softmax_in_place::<FMA>(scores);
            let out = &mut out[at..at + d];
            out.fill(0.0);
            for (p, row) in scores.iter().zip(&rows) {
                axpy::<FMA>(*p, &row[2 * h + at..2 * h + at + d], out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIDDEN: usize = 8;
    const HEADS: usize = 2;
    const WIDE: usize = 20;
    const LAYERS: usize = 2;
    const VOCABULARY: usize = 30;
    const POSITIONS: usize = 16;

    fn config() -> BertConfig {
        BertConfig::from_json(&format!(
            r#"{{"hidden_size": {HIDDEN}, "num_attention_heads": {HEADS}, "intermediate_size": {WIDE},
                "num_hidden_layers": {LAYERS}, "max_position_embeddings": {POSITIONS},
                "vocab_size": {VOCABULARY}, "hidden_act": "gelu"}}"#
        ))
        .unwrap()
    }

    /// Every tensor of a small BERT, filled with a fixed pseudo-random sequence.
    fn tensors() -> Vec<(String, Vec<usize>, Vec<f32>)> {
        let mut seed = 0x2545_f491_u32;
        let mut values = |n: usize, scale: f32| -> Vec<f32> {
            (0..n)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    (seed as f32 / u32::MAX as f32 - 0.5) * scale
                })
                .collect()
        };
        let mut all = vec![
            (
                "embeddings.word_embeddings.weight".to_owned(),
                vec![VOCABULARY, HIDDEN],
                values(VOCABULARY * HIDDEN, 2.0),
            ),
            (
                "embeddings.position_embeddings.weight".to_owned(),
                vec![POSITIONS, HIDDEN],
                values(POSITIONS * HIDDEN, 0.5),
            ),
            (
                "embeddings.token_type_embeddings.weight".to_owned(),
                vec![2, HIDDEN],
                values(2 * HIDDEN, 0.5),
            ),
            (
                "embeddings.LayerNorm.gamma".to_owned(),
                vec![HIDDEN],
                values(HIDDEN, 0.2).iter().map(|v| 1.0 + v).collect(),
            ),
            (
                "embeddings.LayerNorm.beta".to_owned(),
                vec![HIDDEN],
                values(HIDDEN, 0.2),
            ),
        ];
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}");
            for (name, outputs, inputs) in [
                ("attention.self.query", HIDDEN, HIDDEN),
                ("attention.self.key", HIDDEN, HIDDEN),
                ("attention.self.value", HIDDEN, HIDDEN),
                ("attention.output.dense", HIDDEN, HIDDEN),
                ("intermediate.dense", WIDE, HIDDEN),
                ("output.dense", HIDDEN, WIDE),
            ] {
                all.push((
                    format!("{p}.{name}.weight"),
                    vec![outputs, inputs],
                    values(outputs * inputs, 1.5),
                ));
                all.push((
                    format!("{p}.{name}.bias"),
                    vec![outputs],
                    values(outputs, 0.2),
                ));
            }
            for name in ["attention.output.LayerNorm", "output.LayerNorm"] {
                all.push((
                    format!("{p}.{name}.weight"),
                    vec![HIDDEN],
                    values(HIDDEN, 0.2).iter().map(|v| 1.0 + v).collect(),
                ));
                all.push((
                    format!("{p}.{name}.bias"),
                    vec![HIDDEN],
                    values(HIDDEN, 0.2),
                ));
            }
        }
        all
    }

    fn serialize(tensors: &[(String, Vec<usize>, Vec<f32>)]) -> Vec<u8> {
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(n, s, v)| {
                (
                    n.clone(),
                    s.clone(),
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            })
            .collect();
        let views = bytes.iter().map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b)
                    .unwrap(),
            )
        });
        safetensors::serialize(views, None).unwrap()
    }

    /// BERT written out plainly in f64, as the papers define it.
    fn reference(tensors: &[(String, Vec<usize>, Vec<f32>)], ids: &[u32]) -> Vec<f64> {
        let get = |name: &str| -> Vec<f64> {
            let found = tensors.iter().find(|(n, _, _)| n == name).unwrap();
            found.2.iter().map(|&v| f64::from(v)).collect()
        };
        let norm = |x: &mut Vec<f64>, prefix: &str, gamma: &str, beta: &str| {
            let (g, b) = (
                get(&format!("{prefix}.{gamma}")),
                get(&format!("{prefix}.{beta}")),
            );
            for row in x.chunks_mut(HIDDEN) {
                let mean = row.iter().sum::<f64>() / HIDDEN as f64;
                let var = row.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / HIDDEN as f64;
                for (i, v) in row.iter_mut().enumerate() {
                    *v = (*v - mean) / (var + 1e-12).sqrt() * g[i] + b[i];
                }
            }
        };
        let linear = |x: &[f64], prefix: &str, outputs: usize, inputs: usize| -> Vec<f64> {
            let (w, b) = (
                get(&format!("{prefix}.weight")),
                get(&format!("{prefix}.bias")),
            );
            x.chunks(inputs)
                .flat_map(|row| {
                    (0..outputs)
                        .map(|o| {
                            b[o] + (0..inputs).map(|k| row[k] * w[o * inputs + k]).sum::<f64>()
                        })
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        let erf = |x: f64| -> f64 {
            // Maclaurin series; ample for |x| < 3, and the tails are 1 within 2e-5.
            if x.abs() > 3.5 {
                return x.signum();
            }
            let (mut term, mut total, mut n) = (x, x, 0.0);
            while term.abs() > 1e-17 {
                n += 1.0;
                term *= -x * x / n;
                total += term / (2.0 * n + 1.0);
            }
            total * 2.0 / std::f64::consts::PI.sqrt()
        };
        let t = ids.len();
        let (word, place, kind) = (
            get("embeddings.word_embeddings.weight"),
            get("embeddings.position_embeddings.weight"),
            get("embeddings.token_type_embeddings.weight"),
        );
        let mut x: Vec<f64> = (0..t * HIDDEN)
            .map(|i| {
                word[ids[i / HIDDEN] as usize * HIDDEN + i % HIDDEN] + place[i] + kind[i % HIDDEN]
            })
            .collect();
        norm(&mut x, "embeddings.LayerNorm", "gamma", "beta");
        let d = HIDDEN / HEADS;
        for l in 0..LAYERS {
            let p = format!("encoder.layer.{l}");
            let q = linear(&x, &format!("{p}.attention.self.query"), HIDDEN, HIDDEN);
            let k = linear(&x, &format!("{p}.attention.self.key"), HIDDEN, HIDDEN);
            let v = linear(&x, &format!("{p}.attention.self.value"), HIDDEN, HIDDEN);
            let mut context = vec![0.0; t * HIDDEN];
            for h in 0..HEADS {
                for i in 0..t {
                    let scores: Vec<f64> = (0..t)
                        .map(|j| {
                            (0..d)
                                .map(|c| q[i * HIDDEN + h * d + c] * k[j * HIDDEN + h * d + c])
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::MIN, f64::max);
                    let total: f64 = scores.iter().map(|s| (s - max).exp()).sum();
                    for j in 0..t {
                        let weight = (scores[j] - max).exp() / total;
                        for c in 0..d {
                            context[i * HIDDEN + h * d + c] += weight * v[j * HIDDEN + h * d + c];
                        }
                    }
                }
            }
            let attended = linear(
                &context,
                &format!("{p}.attention.output.dense"),
                HIDDEN,
                HIDDEN,
            );
            let mut y: Vec<f64> = attended.iter().zip(&x).map(|(a, b)| a + b).collect();
            norm(
                &mut y,
                &format!("{p}.attention.output.LayerNorm"),
                "weight",
                "bias",
            );
            let wide: Vec<f64> = linear(&y, &format!("{p}.intermediate.dense"), WIDE, HIDDEN)
                .into_iter()
                .map(|v| 0.5 * v * (1.0 + erf(v / std::f64::consts::SQRT_2)))
                .collect();
            let out = linear(&wide, &format!("{p}.output.dense"), HIDDEN, WIDE);
            x = out.iter().zip(&y).map(|(a, b)| a + b).collect();
            norm(&mut x, &format!("{p}.output.LayerNorm"), "weight", "bias");
        }
        let mut pooled: Vec<f64> = (0..HIDDEN)
            .map(|c| (0..t).map(|i| x[i * HIDDEN + c]).sum::<f64>())
            .collect();
        let length = pooled.iter().map(|v| v * v).sum::<f64>().sqrt();
        pooled.iter_mut().for_each(|v| *v /= length);
        pooled
    }

    #[test]
    fn matches_a_plain_reference_forward_pass() {
        let tensors = tensors();
        let encoder = BertEncoder::from_safetensors(&serialize(&tensors), &config()).unwrap();
        assert_eq!(encoder.dimensions(), HIDDEN);
        for ids in [
            vec![3u32],
            vec![1, 7, 2],
            (0..POSITIONS as u32).map(|i| (i * 7) % 30).collect(),
        ] {
            let got = encoder.embed(&ids).unwrap();
            let want = reference(&tensors, &ids);
            for (g, w) in got.iter().zip(&want) {
                assert!(
                    (f64::from(*g) - w).abs() < 2e-5,
                    "{ids:?}: {got:?} vs {want:?}"
                );
            }
            let batch = encoder.embed_many(&[&ids, &ids[..1]], 2).unwrap();
            assert_eq!(batch[0], got);
            assert_eq!(batch[1], encoder.embed(&ids[..1]).unwrap());
        }
    }

    #[test]
    fn bad_token_sequences_are_refused() {
        let encoder = BertEncoder::from_safetensors(&serialize(&tensors()), &config()).unwrap();
        assert_eq!(encoder.embed(&[]), Err(EncodeError::Empty));
        assert_eq!(
            encoder.embed(&[1; POSITIONS + 1]),
            Err(EncodeError::TooLong {
                tokens: POSITIONS + 1,
                limit: POSITIONS
            })
        );
        assert_eq!(
            encoder.embed(&[1, VOCABULARY as u32]),
            Err(EncodeError::UnknownToken {
                id: VOCABULARY as u32,
                vocabulary: VOCABULARY
            })
        );
        let many = encoder.embed_many(&[&[1, 2], &[]], 2);
        assert_eq!(many, Err(EncodeError::Empty));
    }

    #[test]
    fn bad_files_and_configs_say_what_is_wrong() {
        // The message loading these tensors fails with.
        let refusal = |tensors: &[(String, Vec<usize>, Vec<f32>)]| {
            BertEncoder::from_safetensors(&serialize(tensors), &config())
                .unwrap_err()
                .to_string()
        };
        let mut missing = tensors();
        missing.retain(|(n, _, _)| n != "encoder.layer.1.output.dense.bias");
        let err = refusal(&missing);
        assert!(
            err.contains("encoder.layer.1.output.dense.bias is missing"),
            "{err}"
        );

        let mut reshaped = tensors();
        reshaped[0].1 = vec![HIDDEN, VOCABULARY];
        let err = refusal(&reshaped);
        assert!(err.contains("has shape [8, 30], expected [30, 8]"), "{err}");

        let mut unnormed = tensors();
        unnormed.retain(|(n, _, _)| n != "encoder.layer.0.output.LayerNorm.bias");
        let err = refusal(&unnormed);
        assert!(
            err.contains("encoder.layer.0.output.LayerNorm.bias is missing"),
            "{err}"
        );

        let err = BertEncoder::from_safetensors(b"not safetensors", &config()).unwrap_err();
        assert!(err.to_string().contains("not a safetensors file"), "{err}");

        let err = BertConfig::from_json(
            r#"{"hidden_size": 8, "num_attention_heads": 3, "intermediate_size": 8, "num_hidden_layers": 1,
                "max_position_embeddings": 8, "vocab_size": 8}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("not a multiple of num_attention_heads 3"),
            "{err}"
        );
        let err = BertConfig::from_json(
            r#"{"hidden_size": 8, "num_attention_heads": 2, "intermediate_size": 8, "num_hidden_layers": 1,
                "max_position_embeddings": 8, "vocab_size": 8, "hidden_act": "relu"}"#,
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("hidden_act \"relu\" is not supported"),
            "{err}"
        );
    }
}
