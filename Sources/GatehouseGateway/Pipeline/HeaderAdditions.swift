/// A few header fields the pipeline adds to a message (the gateway's JWT upstream; `RateLimit`, `Retry-After`,
/// `traceresponse` downstream), stored inline: up to four without a heap allocation of their own, since a request
/// usually carries none or one.
///
/// The slots are a nominal `Field`, not `(String, String)?` tuples: tuple metadata is built and looked up at run time,
/// and copying or destroying this struct then went through the runtime's generic tuple witnesses on every request
/// (seen in `perf`: `tuple_destroy` and the generic-metadata cache, about 0.7% of the gateway's CPU).
struct HeaderAdditions {
    struct Field {
        var name: String
        var value: String
    }

    private var first: Field?
    private var second: Field?
    private var third: Field?
    private var fourth: Field?
    private var more: [Field] = []
    private(set) var count = 0

    init() {}

    mutating func append(_ name: String, _ value: String) {
        let field = Field(name: name, value: value)
        switch count {
        case 0: first = field
        case 1: second = field
        case 2: third = field
        case 3: fourth = field
        default: more.append(field)
        }
        count += 1
    }

    var isEmpty: Bool { count == 0 }

    func forEach(_ body: (String, String) -> Void) {
        guard count > 0 else { return }
        if let first { body(first.name, first.value) }
        if let second { body(second.name, second.value) }
        if let third { body(third.name, third.value) }
        if let fourth { body(fourth.name, fourth.value) }
        for field in more { body(field.name, field.value) }
    }
}
