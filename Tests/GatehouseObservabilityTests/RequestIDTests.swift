import GatehouseObservability
import Testing

@Suite struct RequestIDTests {
    @Test(arguments: ["a", "abc-1", "A.b_c-9", String(repeating: "x", count: 128)])
    func acceptable(id: String) {
        #expect(RequestID.isAcceptable(id))
        #expect(RequestID.resolve(id) { "generated" } == id)
    }

    @Test(arguments: ["", String(repeating: "x", count: 129), "a b", "a\"b", "a\r\nb", "é", "a/b"])
    func refused(id: String) {
        #expect(!RequestID.isAcceptable(id))
        #expect(RequestID.resolve(id) { "generated" } == "generated")
    }

    @Test func aLoopGeneratorCountsUnderItsPrefix() {
        var generator = RequestIDGenerator(prefix: "abcdefgh")
        #expect(generator.next() == "abcdefgh-1")
        #expect(generator.next() == "abcdefgh-2")
        for _ in 0..<33 { _ = generator.next() }
        #expect(generator.next() == "abcdefgh-10")  // base 36: 36 is "10"
    }

    @Test func generatedIdsAreAcceptableAndDistinct() async {
        let a = RequestIDGenerator()
        let b = RequestIDGenerator()
        #expect(a.prefix != b.prefix)  // 36^8 prefixes: a collision here would be a broken generator
        #expect(RequestID.isAcceptable(RequestID.shared.next()))
        let ids = await withTaskGroup(of: [String].self) { group in
            for _ in 0..<4 { group.addTask { (0..<500).map { _ in RequestID.shared.next() } } }
            return await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(Set(ids).count == 2000)  // the shared generator never hands out one id twice under concurrency
    }
}
