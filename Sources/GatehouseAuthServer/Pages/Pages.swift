import Mustache

/// Renders the sign-in, consent and error pages.
struct Pages: Sendable {
    private let library: MustacheLibrary

    init() throws {
        var library = MustacheLibrary()
        try library.register(PageTemplates.login, named: "login")
        try library.register(PageTemplates.consent, named: "consent")
        try library.register(PageTemplates.error, named: "error")
        try library.register(PageTemplates.logout, named: "logout")
        try library.register(PageTemplates.signedOut, named: "signedOut")
        self.library = library
    }

    func login(clientName: String, csrfToken: String, requestID: String, username: String = "", error: String? = nil) -> String {
        var values: [String: Any] = ["title": "Sign in", "clientName": clientName, "csrfToken": csrfToken, "requestID": requestID, "username": username]
        if let error { values["error"] = error }
        return library.render(values, withTemplate: "login") ?? ""
    }

    func consent(clientName: String, username: String, scopes: [String], csrfToken: String, requestID: String) -> String {
        let values: [String: Any] = ["title": "Allow access", "clientName": clientName, "username": username, "scopes": scopes, "csrfToken": csrfToken, "requestID": requestID]
        return library.render(values, withTemplate: "consent") ?? ""
    }

    func logout(username: String?, csrfToken: String) -> String {
        var values: [String: Any] = ["title": "Sign out", "csrfToken": csrfToken]
        if let username { values["username"] = username }
        return library.render(values, withTemplate: "logout") ?? ""
    }

    func signedOut() -> String {
        library.render(["title": "Signed out"], withTemplate: "signedOut") ?? ""
    }

    func error(heading: String, message: String) -> String {
        library.render(["title": heading, "heading": heading, "message": message], withTemplate: "error") ?? ""
    }
}
