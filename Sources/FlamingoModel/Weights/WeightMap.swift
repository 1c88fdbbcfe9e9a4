/// Where each part of an IDEFICS checkpoint lives (tensor name prefixes as transformers writes
/// them). The only place checkpoint names are spelled out above the block level.
public enum WeightMap {
    public static let vision = "model.vision_model"
    public static let resampler = "model.perceiver_resampler"
    public static let embedding = "model.embed_tokens"
    public static let layers = "model.layers"
    public static let crossAttentionLayers = "model.gated_cross_attn_layers"
    /// The root: the output head reads `model.norm` and `lm_head` from here.
    public static let root = ""

    /// Prefix of decoder layer `i`'s tensors.
    public static func layer(_ i: Int) -> String { "\(layers).\(i)." }
    /// Prefix of gated cross-attention block `i`'s tensors.
    public static func crossAttentionLayer(_ i: Int) -> String { "\(crossAttentionLayers).\(i)." }
    public static let outputHead = ["model.norm.", "lm_head."]

    /// The weight matrices int8 quantization covers: every linear of the language model (decoder
    /// layers, gated cross-attention blocks, the output head). The vision encoder, resampler and
    /// embeddings keep their stored dtype: they are a small share of the weights, and embeddings
    /// are only looked up, never streamed.
    public static func isQuantizable(_ name: String) -> Bool {
        name.hasSuffix(".weight") && (name.hasPrefix(layers + ".") || name.hasPrefix(crossAttentionLayers + ".")
            || name.hasPrefix("lm_head."))
    }

    /// Tensors read once per image, not per token: a gated block's k/v projections of the visual tokens.
    public static func isPerImage(_ name: String) -> Bool {
        name.hasPrefix(crossAttentionLayers + ".") && (name.contains(".cross_attn.k_proj.") || name.contains(".cross_attn.v_proj."))
    }

    /// Buffers some writers save that carry no weights (recomputed from the config).
    public static func isIgnorable(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq") || name.hasSuffix("position_ids")
    }
}
