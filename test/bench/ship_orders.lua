-- wrk script: ships every order listed, one id per line, in the file BENCH_SHIP_IDS; wrk's
-- threads take turns over the list, and a thread stops once its part is answered. A request
-- past the end ships the thread's last order again, which changes nothing.
local counter = 0

function setup(thread)
    thread:set("index", counter)
    counter = counter + 1
end

local ids = {}
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")

function init(args)
    local k = 0
    for line in io.lines(os.getenv("BENCH_SHIP_IDS")) do
        if k % threads == index then
            ids[#ids + 1] = line
        end
        k = k + 1
    end
end

local n, answered = 0, 0

function request()
    if n < #ids then
        n = n + 1
    end
    return wrk.format("POST", "/v1/orders/" .. ids[math.max(n, 1)] .. "/ship")
end

function response(status, headers, body)
    answered = answered + 1
    if answered >= #ids then
        wrk.thread:stop()
    end
end
