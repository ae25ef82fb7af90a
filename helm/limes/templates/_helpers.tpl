{{/* The release's name for its objects. */}}
{{- define "limes.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "limes.selector" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "limes.labels" -}}
{{ include "limes.selector" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "limes.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "limes.fullname" .)) -}}
{{- end -}}

{{/* The etcd client URLs the nodes use: the chart's etcd, or the external ones. */}}
{{- define "limes.etcd" -}}
{{- if .Values.etcd.enabled -}}
{{- $name := printf "%s-etcd" (include "limes.fullname" .) -}}
{{- $urls := list -}}
{{- range $i := until (int .Values.etcd.replicas) -}}
{{- $urls = append $urls (printf "http://%s-%d.%s:2379" $name $i $name) -}}
{{- end -}}
{{- join "," $urls -}}
{{- else -}}
{{- join "," .Values.cluster.etcdEndpoints -}}
{{- end -}}
{{- end -}}

{{/*
One TOML value: strings quoted (JSON escapes are TOML's), whole numbers as integers
(Helm reads every number as a float), lists and tables inline.
*/}}
{{- define "limes.toml.value" -}}
{{- $v := . -}}
{{- if kindIs "string" $v -}}
{{- $v | toJson -}}
{{- else if kindIs "bool" $v -}}
{{- $v -}}
{{- else if or (kindIs "float64" $v) (kindIs "int" $v) (kindIs "int64" $v) -}}
{{- if eq (float64 (int64 $v)) (float64 $v) -}}{{ int64 $v }}{{- else -}}{{ $v }}{{- end -}}
{{- else if kindIs "slice" $v -}}
[{{ range $i, $e := $v }}{{ if $i }}, {{ end }}{{ include "limes.toml.value" $e }}{{ end }}]
{{- else if kindIs "map" $v -}}
{ {{- range $i, $k := keys $v | sortAlpha }}{{ if $i }}, {{ end }}{{ $k | toJson }} = {{ include "limes.toml.value" (index $v $k) }}{{ end -}} }
{{- else -}}
""
{{- end -}}
{{- end -}}

{{/* Whether a value is a non-empty list of tables ([[name]] blocks). */}}
{{- define "limes.toml.isTables" -}}
{{- if and (kindIs "slice" .) (gt (len .) 0) -}}{{- if kindIs "map" (first .) -}}yes{{- end -}}{{- end -}}
{{- end -}}

{{/* A table's keys as `key = value` lines. */}}
{{- define "limes.toml.keys" -}}
{{- range $k := keys . | sortAlpha }}
{{ $k }} = {{ include "limes.toml.value" (index $ $k) }}
{{- end -}}
{{- end -}}

{{/* The configuration file: [section]s, their [[section.list]]s, then [[list]]s. */}}
{{- define "limes.toml" -}}
{{- $cfg := . -}}
{{- range $name := keys $cfg | sortAlpha }}
{{- $v := index $cfg $name }}
{{- if kindIs "map" $v }}

[{{ $name }}]
{{- range $k := keys $v | sortAlpha }}
{{- $e := index $v $k }}
{{- if not (include "limes.toml.isTables" $e) }}
{{ $k }} = {{ include "limes.toml.value" $e }}
{{- end }}
{{- end }}
{{- range $k := keys $v | sortAlpha }}
{{- $e := index $v $k }}
{{- if include "limes.toml.isTables" $e }}
{{- range $t := $e }}

[[{{ $name }}.{{ $k }}]]
{{- include "limes.toml.keys" $t }}
{{- end }}
{{- end }}
{{- end }}
{{- else if include "limes.toml.isTables" $v }}
{{- range $t := $v }}

[[{{ $name }}]]
{{- include "limes.toml.keys" $t }}
{{- end }}
{{- end }}
{{- end }}
{{- end -}}
