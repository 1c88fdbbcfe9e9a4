/// Where each part of an IDEFICS checkpoint lives (tensor name prefixes as transformers writes
/// them). The only place IDEFICS checkpoint names are spelled out above the block level.
enum IdeficsWeightMap {
    static let vision = "model.vision_model"
    static let resampler = "model.perceiver_resampler"
    static let embedding = "model.embed_tokens"
    static let layers = "model.layers"
    static let crossAttentionLayers = "model.gated_cross_attn_layers"
    /// The output head: final RMSNorm, then `lm_head` (with `lm_head.additional_fc`).
    static let finalNorm = "model.norm"
    static let head = "lm_head"

    /// Prefix of decoder layer `i`'s tensors.
    static func layer(_ i: Int) -> String { "\(layers).\(i)." }
    /// Prefix of gated cross-attention block `i`'s tensors.
    static func crossAttentionLayer(_ i: Int) -> String { "\(crossAttentionLayers).\(i)." }
    static let outputHead = [finalNorm + ".", head + "."]

    /// Buffers some writers save that carry no weights (recomputed from the config).
    static func isIgnorable(_ name: String) -> Bool {
        name.hasSuffix("rotary_emb.inv_freq") || name.hasSuffix("position_ids")
    }
}
