-- Posts pre-signed order events, one line each ("<Mcode-Signature>\t<body>") from the file
-- named by the first argument; thread k of n takes lines k, k+n, k+2n, ... and stops at the end.
local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
  thread:set("nthreads", 0)
end

function init(args)
  lines = {}
  for line in io.lines(args[1]) do lines[#lines + 1] = line end
  step = tonumber(args[2])
  index = tid + 1
end

function request()
  local line = lines[index]
  if line == nil then
    wrk.thread:stop()
    line = lines[1]
  end
  index = index + step
  local signature, body = string.match(line, "^(.-)\t(.*)$")
  return wrk.format("POST", "/v1/events", {["Mcode-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
end
