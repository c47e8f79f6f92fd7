-- wrk script: each request places a two-line order for one of the customers listed, one
-- per line, in the file BENCH_CUSTOMERS names, on products BENCH-P1..BENCH-P20.
local customers = {}
for line in io.lines(os.getenv("BENCH_CUSTOMERS")) do
    customers[#customers + 1] = line
end
local n = 0

function request()
    n = n + 1
    local body = string.format(
        '{"customerId":"%s","lines":[{"sku":"BENCH-P%d","quantity":1},' ..
        '{"sku":"BENCH-P%d","quantity":2}]}',
        customers[(n % #customers) + 1], (n % 20) + 1, ((n + 7) % 20) + 1)
    return wrk.format("POST", "/v1/orders", {["Content-Type"] = "application/json"}, body)
end
