-- wrk script: POST /token with the client_credentials grant (RFC 6749 §4.4), authenticating
-- the client with HTTP Basic (client_secret_basic). Used by scripts/bench-token.sh:
--
--   wrk -t1 -c64 -d10s --latency -s bench/token.lua http://127.0.0.1:19000/token
--
-- Env (optional): BENCH_CLIENT_ID (default demo-service), BENCH_CLIENT_SECRET
-- (default demo-service-secret), BENCH_SCOPE (default orders:read).
-- Every response that is not 200 is counted; done() prints the count, a breakdown by status
-- and the first such body, so a run that "succeeds" on errors is obvious.

local client_id = os.getenv("BENCH_CLIENT_ID") or "demo-service"
local client_secret = os.getenv("BENCH_CLIENT_SECRET") or "demo-service-secret"
local scope = os.getenv("BENCH_SCOPE") or "orders:read"

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 with padding (RFC 4648 §4), plain arithmetic so any Lua 5.1 works.
local function base64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        local c1 = math.floor(n / 262144) % 64
        local c2 = math.floor(n / 4096) % 64
        local c3 = math.floor(n / 64) % 64
        local c4 = n % 64
        out[#out + 1] = alphabet:sub(c1 + 1, c1 + 1) .. alphabet:sub(c2 + 1, c2 + 1)
            .. (b and alphabet:sub(c3 + 1, c3 + 1) or "=")
            .. (c and alphabet:sub(c4 + 1, c4 + 1) or "=")
    end
    return table.concat(out)
end

local function form_escape(s)
    return (s:gsub("[^%w%-%._~]", function(ch) return string.format("%%%02X", ch:byte()) end))
end

-- Set once: with no request() function wrk builds the request a single time and reuses it.
wrk.method = "POST"
wrk.body = "grant_type=client_credentials&scope=" .. form_escape(scope)
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Accept"] = "application/json"
wrk.headers["Authorization"] = "Basic " .. base64(client_id .. ":" .. client_secret)

-- Per-thread counters live in each thread's own Lua state; done() runs in the main state and
-- reads them through the thread objects collected in setup().
local threads = {}

function setup(thread)
    threads[#threads + 1] = thread
end

function init(args)
    non200 = 0
    by_status = ""      -- "400=3 503=1", rebuilt on each new error (errors are the rare path)
    first_error = ""
    status_counts = {}
end

function response(status, headers, body)
    if status ~= 200 then
        non200 = non200 + 1
        status_counts[status] = (status_counts[status] or 0) + 1
        local parts = {}
        for code, count in pairs(status_counts) do
            parts[#parts + 1] = code .. "=" .. count
        end
        table.sort(parts)
        by_status = table.concat(parts, " ")
        if first_error == "" then
            first_error = status .. " " .. string.sub(body or "", 1, 300)
        end
    end
end

function done(summary, latency, requests)
    local total = 0
    local breakdown = {}
    local sample = ""
    for _, thread in ipairs(threads) do
        total = total + (thread:get("non200") or 0)
        local s = thread:get("by_status") or ""
        if s ~= "" then breakdown[#breakdown + 1] = s end
        local e = thread:get("first_error") or ""
        if sample == "" and e ~= "" then sample = e end
    end
    io.write(string.format("token.lua: non-200 responses: %d\n", total))
    if total > 0 then
        io.write(string.format("token.lua: by status: %s\n", table.concat(breakdown, " ")))
        io.write(string.format("token.lua: first non-200: %s\n", sample))
    end
end
