{{/*
Named templates every manifest uses: names, labels, and the RBAC rules shared by the
ClusterRole and the namespaced Role. tests/packaging.rs renders these templates with a small
Go-template subset (if/else if/else, include, default, quote, toYaml, nindent, trunc,
trimSuffix, printf, contains, not, and, or, eq); keep to it or extend the test's renderer.
*/}}

{{/* The chart name, or nameOverride. */}}
{{- define "etcd-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Object names: fullnameOverride, else the release name when it contains the chart name, else <release>-<chart>. */}}
{{- define "etcd-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "etcd-operator.labels" -}}
{{ include "etcd-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end }}

{{/* Labels that select the operator's pods. */}}
{{- define "etcd-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "etcd-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
What the operator may do where it watches: the ClusterRole's rules, or the Role's with
watchNamespace. Least privilege, no wildcards; manifests/rbac/clusterrole.yaml explains each.
*/}}
{{- define "etcd-operator.rules" -}}
- apiGroups: [etcd.operator.dev]
  resources: [etcdclusters, etcdbackups, etcdrestores]
  verbs: [get, list, watch, patch]
- apiGroups: [etcd.operator.dev]
  resources: [etcdclusters]
  verbs: [create]
- apiGroups: [etcd.operator.dev]
  resources: [etcdclusters/status, etcdbackups/status, etcdrestores/status]
  verbs: [get, patch]
- apiGroups: [etcd.operator.dev]
  resources: [etcdclusters/finalizers, etcdbackups/finalizers, etcdrestores/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [pods, persistentvolumeclaims, services]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, create, patch]
- apiGroups: [cert-manager.io]
  resources: [certificates]
  verbs: [get, create, patch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}
