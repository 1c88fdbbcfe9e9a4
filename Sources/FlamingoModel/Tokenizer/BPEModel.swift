import FlamingoCore
/// Turns one pre-tokenized word into ids (tokenizer.json `model`).
protocol TokenizerModel: Sendable {
    /// Appends the ids for `word` to `ids`.
    func tokenize(_ word: Scalars, into ids: inout [Int])
    /// Exact (byte-wise) vocabulary lookup.
    func tokenID(forUTF8 bytes: [UInt8]) -> Int?
    /// Every (id, token) pair of the model vocabulary.
    var idToToken: [Int: String] { get }
}

/// The `type` values accepted for `model` sections.
enum ModelType: String {
    case bpe = "BPE"
}

enum ModelFactory {
    static func make(_ json: JSON) throws -> any TokenizerModel {
        let config = try ComponentConfig(component: "model", json: json)
        // Old files omit `type`; HF then infers the model from its fields, and `merges` means BPE.
        let typeName = try config.optionalString("type") ?? (json["merges"] != nil ? "BPE" : "(missing)")
        guard let type = ModelType(rawValue: typeName) else {
            throw TokenizerError.unsupportedComponent(component: "model", type: typeName)
        }
        switch type {
        case .bpe: return try BPEModel(config: config)
        }
    }
}

/// Byte-pair-encoding model, ported from `tokenizers::models::bpe` (BPE + `Word::merge_all`).
///
/// Ranks are keyed by the pair of symbol ids, and a word is merged with a binary heap over a
/// doubly-linked list of symbols: O(n log n) per word instead of the naive O(n²) rescans, so
/// the legacy LLaMA setup, where a whole prompt is a single "word", stays fast.
struct BPEModel: TokenizerModel {
    /// A merge rule: its priority (index in `merges`, lower first) and the merged token's id.
    struct Merge: Sendable {
        var rank: Int32
        var newID: Int32
    }

    /// Token UTF-8 bytes → id. Keyed by bytes, not `String`, so canonically-equivalent
    /// but distinct tokens stay distinct (see `JSON`).
    let vocab: [[UInt8]: Int]
    let idToToken: [Int: String]
    /// Ids of single-scalar tokens: the starting symbols of a word, looked up without
    /// building a byte array per character.
    let scalarIDs: [Unicode.Scalar: Int32]
    /// `<0xXX>` token ids indexed by byte (-1 where the vocabulary lacks one).
    let byteIDs: [Int32]
    /// (left id, right id) packed into 64 bits → merge.
    let merges: [UInt64: Merge]
    let unkID: Int32?
    let fuseUnk: Bool
    let byteFallback: Bool
    /// Look a whole word up in the vocabulary before merging (Llama-3 style files).
    let ignoreMerges: Bool

    init(config: ComponentConfig) throws {
        for option in ["continuing_subword_prefix", "end_of_word_suffix"] {
            if let value = try config.optionalString(option), !value.isEmpty {
                throw TokenizerError.unsupportedOption(component: "model", option: option, value: "\"\(value)\"")
            }
        }
        if let dropout = config.json["dropout"], !dropout.isNull {
            // Dropout makes encoding random; it is a training-time feature.
            guard let d = dropout.doubleValue else { throw config.invalid("dropout", "a number or null") }
            if d > 0 {
                throw TokenizerError.unsupportedOption(component: "model", option: "dropout", value: "\(d)")
            }
        }

        guard let vocabMembers = config.json["vocab"]?.objectMembers else { throw config.invalid("vocab", "an object") }
        var vocab: [[UInt8]: Int] = [:]
        vocab.reserveCapacity(vocabMembers.count)
        var idToToken: [Int: String] = [:]
        idToToken.reserveCapacity(vocabMembers.count)
        var scalarIDs: [Unicode.Scalar: Int32] = [:]
        for member in vocabMembers {
            guard let id = member.value.intValue, id >= 0, id < Int(Int32.max) else {
                throw config.invalid("vocab[\"\(member.key)\"]", "a non-negative 32-bit integer id")
            }
            vocab[Array(member.key.utf8)] = id
            idToToken[id] = member.key
            var it = member.key.unicodeScalars.makeIterator()
            if let first = it.next(), it.next() == nil { scalarIDs[first] = Int32(id) }
        }

        var byteIDs = [Int32](repeating: -1, count: 256)
        for byte in 0..<256 {
            if let id = vocab[Array(byteToken(UInt8(byte)).utf8)] { byteIDs[byte] = Int32(id) }
        }

        let mergeList = try config.array("merges")
        var merges: [UInt64: Merge] = [:]
        merges.reserveCapacity(mergeList.count)
        var rank: Int32 = 0
        for (index, entry) in mergeList.enumerated() {
            let left: String
            let right: String
            switch entry {
            case .string(let line):
                // Legacy "a b" format, split exactly like HF (`#version` headers skipped).
                if line.hasPrefix("#version") { continue }
                let parts = line.split(separator: " ", omittingEmptySubsequences: false)
                guard parts.count == 2 else {
                    throw TokenizerError.invalidMerge(index: index, merge: line, reason: "expected two tokens separated by one space")
                }
                left = String(parts[0])
                right = String(parts[1])
            case .array(let pair):
                guard pair.count == 2, let a = pair[0].stringValue, let b = pair[1].stringValue else {
                    throw TokenizerError.invalidMerge(index: index, merge: "\(pair.map(\.typeName))", reason: "expected [left, right] strings")
                }
                left = a
                right = b
            default:
                throw TokenizerError.invalidMerge(index: index, merge: entry.typeName, reason: "expected a string or a [left, right] array")
            }
            let leftBytes = Array(left.utf8)
            let rightBytes = Array(right.utf8)
            guard let a = vocab[leftBytes] else {
                throw TokenizerError.invalidMerge(index: index, merge: "\(left) \(right)", reason: "'\(left)' is not in the vocabulary")
            }
            guard let b = vocab[rightBytes] else {
                throw TokenizerError.invalidMerge(index: index, merge: "\(left) \(right)", reason: "'\(right)' is not in the vocabulary")
            }
            guard let merged = vocab[leftBytes + rightBytes] else {
                throw TokenizerError.invalidMerge(index: index, merge: "\(left) \(right)", reason: "'\(left + right)' is not in the vocabulary")
            }
            // A repeated pair keeps its last rank, as HF's HashMap collect does.
            merges[Self.pairKey(Int32(a), Int32(b))] = Merge(rank: rank, newID: Int32(merged))
            rank += 1
        }

        var unkID: Int32?
        if let unk = try config.optionalString("unk_token") {
            guard let id = vocab[Array(unk.utf8)] else { throw TokenizerError.unknownToken(component: "model unk_token", token: unk) }
            unkID = Int32(id)
        }

        self.vocab = vocab
        self.idToToken = idToToken
        self.scalarIDs = scalarIDs
        self.byteIDs = byteIDs
        self.merges = merges
        self.unkID = unkID
        self.fuseUnk = try config.bool("fuse_unk", default: false)
        self.byteFallback = try config.bool("byte_fallback", default: false)
        self.ignoreMerges = try config.bool("ignore_merges", default: false)
    }

    static func pairKey(_ a: Int32, _ b: Int32) -> UInt64 {
        UInt64(UInt32(bitPattern: a)) << 32 | UInt64(UInt32(bitPattern: b))
    }

    func tokenID(forUTF8 bytes: [UInt8]) -> Int? {
        vocab[bytes]
    }

    func tokenize(_ word: Scalars, into ids: inout [Int]) {
        if word.isEmpty { return }
        if ignoreMerges, let id = vocab[word.utf8Bytes] {
            ids.append(id)
            return
        }
        var symbols = initialSymbols(word)
        mergeAll(&symbols)
        for s in symbols { ids.append(Int(s)) }
    }

    /// One symbol per Unicode scalar; unknown scalars become `<0xXX>` byte tokens (when
    /// `byte_fallback` and all bytes exist) or the unk token, fused if `fuse_unk`.
    /// Mirrors HF `BPE::merge_word`, including its quirk that byte-fallback tokens do not
    /// flush a pending unk (only an in-vocabulary symbol or the end of the word does).
    func initialSymbols(_ word: Scalars) -> [Int32] {
        var symbols: [Int32] = []
        symbols.reserveCapacity(word.count)
        var pendingUnk = false
        for scalar in word {
            if let id = scalarIDs[scalar] {
                if pendingUnk, let unk = unkID {
                    symbols.append(unk)
                    pendingUnk = false
                }
                symbols.append(id)
                continue
            }
            if byteFallback {
                var bytes: [Int32] = []
                UTF8.encode(scalar) { bytes.append(byteIDs[Int($0)]) }
                if !bytes.contains(where: { $0 < 0 }) {
                    symbols.append(contentsOf: bytes)
                    continue
                }
            }
            guard let unk = unkID else { continue }  // HF drops the character when there is no unk token.
            if pendingUnk && !fuseUnk { symbols.append(unk) }
            pendingUnk = true
        }
        if pendingUnk, let unk = unkID { symbols.append(unk) }
        return symbols
    }

    /// Applies merges lowest rank first; among equal ranks the leftmost pair wins (the heap
    /// key is rank then position, as in HF `Word::merge_all`). Heap entries made stale by an
    /// earlier merge are detected by re-checking the pair and skipped.
    func mergeAll(_ symbols: inout [Int32]) {
        let n = symbols.count
        if n < 2 { return }
        var prev = [Int32](repeating: -1, count: n)
        var next = [Int32](repeating: -1, count: n)
        var alive = [Bool](repeating: true, count: n)
        for i in 0..<n {
            prev[i] = Int32(i - 1)
            next[i] = i + 1 < n ? Int32(i + 1) : -1
        }
        var heap = MergeHeap()
        heap.reserve(n)
        for i in 0..<(n - 1) {
            if let m = merges[Self.pairKey(symbols[i], symbols[i + 1])] {
                heap.push(rank: m.rank, position: Int32(i), newID: m.newID)
            }
        }
        while let top = heap.pop() {
            let pos = Int(top.position)
            guard alive[pos] else { continue }
            let right = Int(next[pos])
            guard right >= 0 else { continue }
            guard let m = merges[Self.pairKey(symbols[pos], symbols[right])], m.newID == top.newID else { continue }
            symbols[pos] = top.newID
            alive[right] = false
            let after = next[right]
            next[pos] = after
            if after >= 0 { prev[Int(after)] = Int32(pos) }
            let before = prev[pos]
            if before >= 0, let m = merges[Self.pairKey(symbols[Int(before)], symbols[pos])] {
                heap.push(rank: m.rank, position: before, newID: m.newID)
            }
            if after >= 0, let m = merges[Self.pairKey(symbols[pos], symbols[Int(after)])] {
                heap.push(rank: m.rank, position: Int32(pos), newID: m.newID)
            }
        }
        var out: [Int32] = []
        out.reserveCapacity(n)
        for i in 0..<n where alive[i] { out.append(symbols[i]) }
        symbols = out
    }
}

/// The byte-fallback token spelling, `<0xE4>` (Rust `format!("<{b:#04X}>")`).
private func byteToken(_ byte: UInt8) -> String {
    let digits = Array("0123456789ABCDEF".utf8)
    return "<0x" + String(decoding: [digits[Int(byte >> 4)], digits[Int(byte & 0xF)]], as: UTF8.self) + ">"
}

/// Min-heap of candidate merges ordered by (rank, position), packed into one `UInt64` key.
struct MergeHeap {
    struct Entry {
        var key: UInt64
        var newID: Int32
        var position: Int32 { Int32(truncatingIfNeeded: key & 0xFFFF_FFFF) }
    }

    private var entries: [Entry] = []

    mutating func reserve(_ n: Int) { entries.reserveCapacity(n) }

    mutating func push(rank: Int32, position: Int32, newID: Int32) {
        let key = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: position))
        entries.append(Entry(key: key, newID: newID))
        var i = entries.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            if entries[parent].key <= entries[i].key { break }
            entries.swapAt(parent, i)
            i = parent
        }
    }

    mutating func pop() -> Entry? {
        guard let last = entries.popLast() else { return nil }
        guard !entries.isEmpty else { return last }
        let top = entries[0]
        entries[0] = last
        var i = 0
        let count = entries.count
        while true {
            let l = 2 * i + 1
            if l >= count { break }
            let r = l + 1
            let child = r < count && entries[r].key < entries[l].key ? r : l
            if entries[i].key <= entries[child].key { break }
            entries.swapAt(i, child)
            i = child
        }
        return top
    }
}
