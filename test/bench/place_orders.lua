-- wrk script: places two-line orders for the customers listed, one per line, in the file
-- BENCH_CUSTOMERS, on products BENCH-P1..BENCH-P20. With BENCH_ORDERS set, wrk's threads
-- split that many between them, and a thread stops once its share is answered.
local customers = {}
for line in io.lines(os.getenv("BENCH_CUSTOMERS")) do
    customers[#customers + 1] = line
end
local total = tonumber(os.getenv("BENCH_ORDERS") or "")
local threads = tonumber(os.getenv("BENCH_THREADS") or "2")
local share = total and math.ceil(total / threads)
local n, answered = 0, 0

function request()
    n = n + 1
    local body = string.format(
        '{"customerId":"%s","lines":[{"sku":"BENCH-P%d","quantity":1},' ..
        '{"sku":"BENCH-P%d","quantity":2}]}',
        customers[(n % #customers) + 1], (n % 20) + 1, ((n + 7) % 20) + 1)
    return wrk.format("POST", "/v1/orders", {["Content-Type"] = "application/json"}, body)
end

function response(status, headers, body)
    answered = answered + 1
    if share and answered >= share then
        wrk.thread:stop()
    end
end
