{{/* The chart's name, for labels. */}}
{{- define "rauha.name" -}}rauha{{- end -}}

{{/* Labels every object of the release carries. */}}
{{- define "rauha.labels" -}}
app.kubernetes.io/name: {{ include "rauha.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* The operator's selector labels. */}}
{{- define "rauha.operator.selector" -}}
app.kubernetes.io/name: {{ include "rauha.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Names of the release's objects. */}}
{{- define "rauha.operator.fullname" -}}{{ .Release.Name }}-operator{{- end -}}

{{/* An image reference: registry/repository, then @digest or :tag. */}}
{{- define "rauha.image" -}}
{{- $root := index . 0 -}}
{{- $repository := index . 1 -}}
{{- $digest := index . 2 -}}
{{- if $digest -}}
{{ $root.Values.image.registry }}/{{ $repository }}@{{ $digest }}
{{- else -}}
{{ $root.Values.image.registry }}/{{ $repository }}:{{ $root.Values.image.tag | default $root.Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* The node DaemonSet's name and selector labels. */}}
{{- define "rauha.node.fullname" -}}{{ .Release.Name }}-node{{- end -}}
{{- define "rauha.node.selector" -}}
app.kubernetes.io/name: {{ include "rauha.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: node
{{- end -}}

{{/* Env of a pod that talks to the API server: where it is, when its
service address does not reach it (values' apiServer). */}}
{{- define "rauha.apiServerEnv" -}}
{{- with .Values.apiServer }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ (splitList ":" .) | first | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ (splitList ":" .) | last | quote }}
{{- end }}
{{- end -}}
