/// The sign-in pages' Mustache templates. Kept in the binary (not resource files) so the executable is
/// self-contained wherever it is copied; `{{ }}` escapes HTML.
enum PageTemplates {
    static let layoutStart = """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
        <title>{{title}} · Gatehouse</title>
        <style>
        body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:#f4f5f7;color:#1f2328;margin:0}
        main{max-width:24rem;margin:8vh auto;background:#fff;border-radius:12px;box-shadow:0 2px 12px rgba(0,0,0,.08);padding:2rem}
        h1{font-size:1.35rem;margin:0 0 .25rem} p.sub{color:#59636e;margin:0 0 1.5rem}
        label{display:block;font-weight:600;margin:1rem 0 .35rem} input[type=text],input[type=password]{width:100%;box-sizing:border-box;padding:.6rem;border:1px solid #d0d7de;border-radius:6px;font-size:1rem}
        button{margin-top:1.5rem;padding:.65rem 1.2rem;border:0;border-radius:6px;font-size:1rem;cursor:pointer;background:#1f6feb;color:#fff}
        button.secondary{background:#eaeef2;color:#1f2328;margin-left:.5rem}
        .error{background:#ffebe9;border:1px solid #ff818266;color:#82071e;padding:.6rem .8rem;border-radius:6px;margin-bottom:1rem}
        ul.scopes{padding-left:1.2rem} code{background:#f6f8fa;padding:.1rem .3rem;border-radius:4px}
        footer{color:#8c959f;font-size:.8rem;margin-top:2rem}
        </style></head><body><main>
        """

    static let layoutEnd = """
        <footer>Gatehouse authorization server</footer></main></body></html>
        """

    static let login = layoutStart + """
        <h1>Sign in</h1>
        <p class="sub">to continue to <strong>{{clientName}}</strong></p>
        {{#error}}<div class="error" id="login-error" role="alert">{{error}}</div>{{/error}}
        <form id="login-form" method="post" action="/login" autocomplete="on">
        <input type="hidden" name="csrf_token" value="{{csrfToken}}">
        <input type="hidden" name="request" value="{{requestID}}">
        <label for="username">Username</label>
        <input type="text" id="username" name="username" value="{{username}}" autocomplete="username" autocapitalize="none" required autofocus>
        <label for="password">Password</label>
        <input type="password" id="password" name="password" autocomplete="current-password" required>
        <button type="submit" id="login-submit">Sign in</button>
        </form>
        """ + layoutEnd

    static let consent = layoutStart + """
        <h1>Allow access?</h1>
        <p class="sub"><strong>{{clientName}}</strong> asks to act as <strong>{{username}}</strong> with:</p>
        <ul class="scopes">{{#scopes}}<li><code>{{.}}</code></li>{{/scopes}}{{^scopes}}<li>basic access (no scopes)</li>{{/scopes}}</ul>
        <form id="consent-form" method="post" action="/consent">
        <input type="hidden" name="csrf_token" value="{{csrfToken}}">
        <input type="hidden" name="request" value="{{requestID}}">
        <button type="submit" id="consent-approve" name="decision" value="approve">Allow</button>
        <button type="submit" id="consent-deny" name="decision" value="deny" class="secondary">Deny</button>
        </form>
        """ + layoutEnd

    static let logout = layoutStart + """
        <h1>Sign out?</h1>
        {{#username}}<p class="sub">You are signed in as <strong>{{username}}</strong>.</p>{{/username}}
        <form id="logout-form" method="post" action="/logout">
        <input type="hidden" name="csrf_token" value="{{csrfToken}}">
        <button type="submit" id="logout-submit">Sign out</button>
        </form>
        """ + layoutEnd

    static let signedOut = layoutStart + """
        <h1 id="signed-out">Signed out</h1>
        <p class="sub">You are signed out of Gatehouse. Tokens already issued to applications stay valid until they expire or are revoked.</p>
        """ + layoutEnd

    static let error = layoutStart + """
        <h1>{{heading}}</h1>
        <div class="error" id="error-message">{{message}}</div>
        <p class="sub">Return to the application and start again.</p>
        """ + layoutEnd
}
