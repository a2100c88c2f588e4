-- Posts pre-signed order events, one line each ("<Mcode-Signature>\t<body>") from the file
-- named by the first argument; thread k of n takes lines k, k+n, k+2n, ... (and wraps around,
-- which makes the rest replays: give it more lines than a run can post).
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
  if lines[index] == nil then index = tid + 1 end
  local line = lines[index]
  index = index + step
  local signature, body = string.match(line, "^(.-)\t(.*)$")
  return wrk.format("POST", "/v1/events", {["Mcode-Signature"] = signature, ["Content-Type"] = "application/json"}, body)
end
