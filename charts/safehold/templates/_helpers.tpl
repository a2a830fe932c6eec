{{/* Names and labels shared by every template. */}}
{{- define "safehold.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 40 | trimSuffix "-" -}}
{{- end -}}

{{- define "safehold.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "safehold.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "safehold.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "safehold.selectorLabels" -}}
app.kubernetes.io/name: {{ include "safehold.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "safehold.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "safehold.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: safehold
{{- end -}}

{{- define "safehold.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "safehold.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "safehold.moverServiceAccountName" -}}
{{- if .Values.movers.serviceAccount.create -}}
{{- default (printf "%s-mover" (include "safehold.fullname" .)) .Values.movers.serviceAccount.name -}}
{{- else -}}
{{- .Values.movers.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "safehold.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{/* Kopf peering is on when more than one replica runs. */}}
{{- define "safehold.peering" -}}
{{- if gt (int .Values.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{/* How mover Jobs reach the repository gateway. */}}
{{- define "safehold.gatewayURL" -}}
{{- if .Values.gateway.url -}}
{{- .Values.gateway.url -}}
{{- else -}}
{{- printf "http://%s-gateway.%s.svc:%v" (include "safehold.fullname" .) .Release.Namespace .Values.gateway.port -}}
{{- end -}}
{{- end }}
