<?xml version="1.0" encoding="utf-8"?>
<!-- taskbridge: prints the first element inside a SOAP Envelope's Body (SOAP 1.1 or 1.2, matched by local
     name), with the namespace declarations in scope, so that it can be validated on its own.
     Fails (xsltproc exits non-zero) when the document has no Envelope/Body child element. -->
<xsl:stylesheet version="1.0" xmlns:xsl="http://www.w3.org/1999/XSL/Transform">
  <xsl:output method="xml" encoding="utf-8" indent="no"/>
  <xsl:template match="/">
    <xsl:variable name="payload" select="*[local-name() = 'Envelope']/*[local-name() = 'Body']/*"/>
    <xsl:choose>
      <xsl:when test="$payload">
        <xsl:copy-of select="$payload[1]"/>
      </xsl:when>
      <xsl:otherwise>
        <xsl:message terminate="yes">body-child.xsl: no element inside Envelope/Body</xsl:message>
      </xsl:otherwise>
    </xsl:choose>
  </xsl:template>
</xsl:stylesheet>
