-- wrk script: each request registers a new user with an address no other request uses;
-- with BENCH_KEYED=1 each also carries an Idempotency-Key no other request uses.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

local keyed = os.getenv("BENCH_KEYED") == "1"

function init(args)
    thread_id = tid
    math.randomseed(os.time() + thread_id)
    prefix = string.format("%08x", math.random(0, 0x7fffffff))
end

function request()
    counter = counter + 1
    local body = string.format('{"email":"b%s.%d.%d@bench.example","name":"Bench User"}',
                               prefix, thread_id, counter)
    local headers = {["Content-Type"] = "application/json"}
    if keyed then
        headers["Idempotency-Key"] = string.format("k%s.%d.%d", prefix, thread_id, counter)
    end
    return wrk.format("POST", "/v1/users", headers, body)
end
