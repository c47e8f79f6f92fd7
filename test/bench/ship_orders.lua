-- wrk script: ships every order listed, one id per line, in the file BENCH_SHIP_IDS; wrk's
-- threads take turns over the list, and each goes round its part until wrk is stopped
-- (shipping an order again changes nothing), so the caller stops wrk once all have shipped.
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

local n = 0

function request()
    n = n % #ids + 1
    return wrk.format("POST", "/v1/orders/" .. ids[n] .. "/ship")
end
