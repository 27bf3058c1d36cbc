-- wrk script: POST a fixed form with HTTP Basic client authentication, counting non-200 answers.
-- Used by scripts/bench-token-services.sh for introspection and token exchange.
--
-- Env: BENCH_CLIENT_ID, BENCH_CLIENT_SECRET, BENCH_BODY (the url-encoded form), BENCH_ACCEPT (optional Accept).

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local function base64(s)
    local out = {}
    for i = 1, #s, 3 do
        local a, b, c = s:byte(i, i + 2)
        local n = a * 65536 + (b or 0) * 256 + (c or 0)
        out[#out + 1] = alphabet:sub(math.floor(n / 262144) % 64 + 1, math.floor(n / 262144) % 64 + 1)
            .. alphabet:sub(math.floor(n / 4096) % 64 + 1, math.floor(n / 4096) % 64 + 1)
            .. (b and alphabet:sub(math.floor(n / 64) % 64 + 1, math.floor(n / 64) % 64 + 1) or "=")
            .. (c and alphabet:sub(n % 64 + 1, n % 64 + 1) or "=")
    end
    return table.concat(out)
end

wrk.method = "POST"
wrk.body = os.getenv("BENCH_BODY")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.headers["Authorization"] = "Basic " .. base64(os.getenv("BENCH_CLIENT_ID") .. ":" .. os.getenv("BENCH_CLIENT_SECRET"))
local accept = os.getenv("BENCH_ACCEPT")
if accept and accept ~= "" then wrk.headers["Accept"] = accept end

local bad = 0
local first_bad = nil
function response(status, headers, body)
    if status ~= 200 or body:find('"active":false', 1, true) then
        bad = bad + 1
        if not first_bad then first_bad = status .. " " .. body end
    end
end

function done(summary, latency, requests)
    io.write(string.format("form-post.lua: non-200 or inactive responses: %d\n", bad))
    if first_bad then io.write("form-post.lua: first: " .. first_bad .. "\n") end
end
