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
