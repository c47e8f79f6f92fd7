-- wrk script: each request adds one unit of stock to the product in the URL.
function request()
    return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, '{"quantity":1}')
end
