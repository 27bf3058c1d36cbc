/// A few header fields the pipeline adds to a message (the gateway's JWT upstream; `RateLimit`, `Retry-After`,
/// `traceresponse` downstream), stored inline: up to four without a heap allocation of their own, since a request
/// usually carries none or one.
struct HeaderAdditions {
    private var first: (String, String)?
    private var second: (String, String)?
    private var third: (String, String)?
    private var fourth: (String, String)?
    private var more: [(String, String)] = []
    private(set) var count = 0

    init() {}

    mutating func append(_ name: String, _ value: String) {
        switch count {
        case 0: first = (name, value)
        case 1: second = (name, value)
        case 2: third = (name, value)
        case 3: fourth = (name, value)
        default: more.append((name, value))
        }
        count += 1
    }

    var isEmpty: Bool { count == 0 }

    func forEach(_ body: (String, String) -> Void) {
        guard count > 0 else { return }
        if let first { body(first.0, first.1) }
        if let second { body(second.0, second.1) }
        if let third { body(third.0, third.1) }
        if let fourth { body(fourth.0, fourth.1) }
        for (name, value) in more { body(name, value) }
    }
}
