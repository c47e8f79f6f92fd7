-- wrk script: each request registers a new user with an address no other request uses.
local counter = 0
local thread_id = 0
local threads = {}

function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    thread_id = tid
    math.randomseed(os.time() + thread_id)
    prefix = string.format("%08x", math.random(0, 0x7fffffff))
end

function request()
    counter = counter + 1
    local body = string.format('{"email":"b%s.%d.%d@bench.example","name":"Bench User"}',
                               prefix, thread_id, counter)
    return wrk.format("POST", "/v1/users", {["Content-Type"] = "application/json"}, body)
end
