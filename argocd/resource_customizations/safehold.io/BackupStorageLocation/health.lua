-- Argo CD health of a BackupStorageLocation: Healthy when Ready is True for the current
-- generation, Degraded when Ready is False or the last repository check found data missing or
-- damaged (Degraded True), Progressing until the operator has looked at it.
local hs = {}
local ready = nil
local damaged = nil
if obj.status ~= nil and obj.status.conditions ~= nil then
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Ready" then ready = c end
    if c.type == "Degraded" and c.status == "True" then damaged = c end
  end
end
if ready == nil or (ready.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and ready.observedGeneration < obj.metadata.generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the Safehold operator"
  return hs
end
if ready.status == "True" and damaged ~= nil then
  hs.status = "Degraded"
  hs.message = damaged.reason .. ": " .. (damaged.message or "")
  return hs
end
if ready.status == "True" then
  hs.status = "Healthy"
else
  hs.status = "Degraded"
end
hs.message = ready.reason .. ": " .. (ready.message or "")
return hs
