-- Argo CD health of Slipway's Environment, DeployRequest and Rollback (slipway.dev), from the
-- kstatus conditions the controller writes: Stalled=True -> Degraded, Ready=True -> Healthy,
-- anything else (no status yet, a status of an older generation, a step running, waiting in the
-- queue, a host not answering for now) -> Progressing. README: "Health in GitOps tools".
local hs = { status = "Progressing", message = "Waiting for the Slipway controller" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.message = "Waiting for the Slipway controller to observe generation " .. generation
  return hs
end
local ready, stalled = nil, nil
for _, c in ipairs(obj.status.conditions) do
  if c.type == "Ready" then
    ready = c
  elseif c.type == "Stalled" then
    stalled = c
  end
end
local function describe(c)
  local text = c.reason or ""
  if c.message ~= nil and c.message ~= "" then
    text = text .. ": " .. c.message
  end
  if obj.status.phase ~= nil then
    text = obj.status.phase .. " (" .. text .. ")"
  end
  return text
end
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
elseif ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = describe(ready)
elseif ready ~= nil then
  hs.message = describe(ready)
end
return hs
